/* CAM overlays (common/models/overlay.h) and their font (font.h): the
 * picture keeps the photograph's size, a hot map region takes the scale's
 * hot colour blended as documented, a cold one leaves the photograph alone,
 * the legend bar runs the scale from hot (top) to cold, the label's text
 * changes pixels only inside its box, and bad input is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "font.h"
#include "overlay.h"

#define W 300
#define H 200

struct pic {
    uint8_t photo[W * H * 3], out[W * H * 3];
    float *scratch;
};

static const uint8_t *px(const uint8_t *rgb, int x, int y)
{
    return rgb + ((size_t)y * W + x) * 3;
}

static int inside(const struct ovl_box *b, int x, int y)
{
    return x >= b->x && x < b->x + b->w && y >= b->y && y < b->y + b->h;
}

static struct pic *grey_pic(void)
{
    struct pic *p = calloc(1, sizeof(*p));

    assert_non_null(p);
    memset(p->photo, 128, sizeof(p->photo));
    p->scratch = malloc(ovl_scratch(W, 4) * sizeof(float));
    assert_non_null(p->scratch);
    return p;
}

static void free_pic(struct pic *p)
{
    free(p->scratch);
    free(p);
}

static void test_colour_scale_is_jet(void **st)
{
    uint8_t c[3];

    (void)st;
    ovl_colour(1.0f, c); /* hot: dark red */
    assert_true(c[0] == 128 && c[1] == 0 && c[2] == 0);
    ovl_colour(0.0f, c); /* cold: dark blue */
    assert_true(c[0] == 0 && c[1] == 0 && c[2] == 128);
    ovl_colour(0.5f, c); /* middle: green-ish, no red/blue dominance */
    assert_true(c[1] == 255 && c[0] == c[2]);
    ovl_colour(7.0f, c); /* clamped */
    assert_true(c[0] == 128 && c[1] == 0 && c[2] == 0);
}

/* Upsampling: align_corners=False bilinear (torch's F.interpolate): a 2x1
 * grid [0, 1] to 4 pixels is 0, 0.25, 0.75, 1. */
static void test_upsampling_is_bilinear_with_aligned_centres(void **st)
{
    const float grid[2] = {0.0f, 1.0f};
    float map[4 * 3], scratch[64];

    (void)st;
    ovl_upsample(grid, 1, 2, map, 4, 3, scratch);
    for (int y = 0; y < 3; y++) {
        assert_float_equal(map[y * 4 + 0], 0.0f, 1e-7);
        assert_float_equal(map[y * 4 + 1], 0.25f, 1e-7);
        assert_float_equal(map[y * 4 + 2], 0.75f, 1e-7);
        assert_float_equal(map[y * 4 + 3], 1.0f, 1e-7);
    }
}

/* A 4x4 map hot in its bottom-left cell only, over mid grey: pixels deep in
 * that cell are (1 - a) x grey + a x hot, pixels of cold cells are grey,
 * away from the label and the legend. */
static void test_hot_region_takes_the_hot_colour_cold_region_stays(void **st)
{
    struct pic *p = grey_pic();
    float grid[16] = {0};
    struct err e = {0};
    struct ovl_box legend, label;
    uint8_t hot[3];

    (void)st;
    grid[12] = 1.0f; /* row 3, column 0 */
    assert_int_equal(
        ovl_render(p->photo, W, H, grid, 4, 4, "grade 3  P=0.91", p->out, p->scratch, &e), ERR_OK);
    ovl_layout(W, H, "grade 3  P=0.91", &legend, &label);
    ovl_colour(1.0f, hot);
    /* cell (3, 0) covers x < 75, y >= 150; its centre is at (37, 175) and
     * pixels within a quarter cell of the image corner have m = 1 */
    for (int y = H - 10; y < H; y++)
        for (int x = 0; x < 10; x++)
            for (int c = 0; c < 3; c++) {
                float want = (1 - OVL_ALPHA) * 128.0f / 255.0f + OVL_ALPHA * hot[c] / 255.0f;
                assert_int_equal(px(p->out, x, y)[c], (int)(want * 255.0f + 0.5f));
            }
    /* far from the hot cell: the photograph itself */
    for (int y = 60; y < 100; y++)
        for (int x = 160; x < 220; x++) {
            assert_false(inside(&legend, x, y) || inside(&label, x, y));
            for (int c = 0; c < 3; c++)
                assert_int_equal(px(p->out, x, y)[c], 128);
        }
    /* the photograph is untouched */
    for (size_t i = 0; i < sizeof(p->photo); i++)
        assert_int_equal(p->photo[i], 128);
    free_pic(p);
}

/* The legend bar: hot at its top, cold at its bottom, opaque, inside the
 * legend box at the right edge; drawing it changes no pixel outside. */
static void test_legend_bar_shows_the_scale_at_the_right(void **st)
{
    struct pic *p = grey_pic();
    float grid[16] = {0};
    struct err e = {0};
    struct ovl_box legend, label;
    uint8_t hot[3], cold[3];
    int top = -1, bottom = -1, col = -1;

    (void)st;
    assert_int_equal(ovl_render(p->photo, W, H, grid, 4, 4, "", p->out, p->scratch, &e), ERR_OK);
    ovl_layout(W, H, "", &legend, &label);
    assert_int_equal(label.w * label.h, 0);
    assert_true(legend.x > W / 2 && legend.x + legend.w <= W && legend.h > H / 4);
    ovl_colour(1.0f, hot);
    ovl_colour(0.0f, cold);
    /* the column of the bar: the rightmost pixel column of the legend
     * box that holds the hot colour */
    for (int x = legend.x + legend.w - 1; x >= legend.x && col < 0; x--)
        for (int y = legend.y; y < legend.y + legend.h; y++)
            if (memcmp(px(p->out, x, y), hot, 3) == 0) {
                col = x;
                break;
            }
    assert_true(col >= 0);
    for (int y = legend.y; y < legend.y + legend.h; y++) {
        if (memcmp(px(p->out, col, y), hot, 3) == 0 && top < 0)
            top = y;
        if (memcmp(px(p->out, col, y), cold, 3) == 0)
            bottom = y;
    }
    assert_true(top >= 0 && bottom > top + H / 4);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            if (!inside(&legend, x, y))
                for (int c = 0; c < 3; c++)
                    assert_int_equal(px(p->out, x, y)[c], 128);
    free_pic(p);
}

/* The label: with a cold map, every pixel it changes lies in its box, and
 * it changes many; another grade changes some of those pixels again. */
static void test_label_changes_pixels_only_in_its_box(void **st)
{
    struct pic *a = grey_pic(), *b = grey_pic();
    float grid[16] = {0};
    struct err e = {0};
    struct ovl_box legend, label, l2;
    int changed = 0, white = 0, differ = 0;

    (void)st;
    assert_int_equal(
        ovl_render(a->photo, W, H, grid, 4, 4, "grade 3  P=0.91\nGrad-CAM", a->out, a->scratch, &e),
        ERR_OK);
    assert_int_equal(
        ovl_render(b->photo, W, H, grid, 4, 4, "grade 4  P=0.91\nGrad-CAM", b->out, b->scratch, &e),
        ERR_OK);
    ovl_layout(W, H, "grade 3  P=0.91\nGrad-CAM", &legend, &label);
    ovl_layout(W, H, "grade 4  P=0.91\nGrad-CAM", &legend, &l2);
    assert_memory_equal(&label, &l2, sizeof(label));
    /* two lines at scale 1: the longer one's width, 2 x 9 - 1 high, a
     * margin of 2 all round */
    assert_int_equal(label.w, font_text_width("grade 3  P=0.91", 1) + 4);
    assert_int_equal(label.h, 2 * FONT_CELL_H - 1 + 4);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            const uint8_t *p = px(a->out, x, y);
            int ch = p[0] != 128 || p[1] != 128 || p[2] != 128;
            if (inside(&legend, x, y))
                continue;
            if (ch)
                assert_true(inside(&label, x, y));
            changed += ch;
            white += p[0] == 255 && p[1] == 255 && p[2] == 255;
            differ += memcmp(p, px(b->out, x, y), 3) != 0;
        }
    assert_int_equal(changed, label.w * label.h); /* the box is shaded */
    assert_true(white > 100);                     /* the glyphs' dots */
    assert_true(differ > 5 && differ < 40);       /* "3" vs "4" */
    free_pic(a);
    free_pic(b);
}

static void test_font_glyphs_and_sizes(void **st)
{
    uint8_t rgb[20 * 10 * 3] = {0};
    const uint8_t white[3] = {255, 255, 255};
    int dots = 0;

    (void)st;
    /* '1': a vertical stroke down its middle column, to the baseline */
    for (int y = 0; y < 7; y++)
        assert_int_equal(font_dot('1', 2, y), 1);
    assert_int_equal(font_dot('1', 2, 7), 0);
    assert_int_equal(font_dot(' ', 2, 3), 0);
    assert_int_equal(font_dot(200, 0, 1), font_dot('?', 0, 1)); /* unknown byte: '?' */
    assert_int_equal(font_dot('A', 5, 0), 0);                   /* outside the glyph */
    assert_int_equal(font_text_width("ab", 2), (2 * 6 - 1) * 2);
    assert_int_equal(font_text_width("", 3), 0);
    assert_int_equal(font_text_height(3), 24);
    assert_int_equal(font_dot('g', 2, 7), 1); /* the descender */
    assert_int_equal(font_dot('a', 2, 7), 0);
    /* drawn and clipped at the image's edge: no write past the buffer */
    font_draw(rgb, 20, 10, 15, 5, "HH", 2, white);
    for (size_t i = 0; i < sizeof(rgb); i += 3)
        dots += rgb[i] == 255;
    assert_true(dots > 0 && dots < 5 * 5);
}

static void test_bad_maps_and_sizes_are_refused(void **st)
{
    struct pic *p = grey_pic();
    float grid[16] = {0};
    struct err e = {0};

    (void)st;
    grid[5] = NAN;
    assert_int_equal(ovl_render(p->photo, W, H, grid, 4, 4, "x", p->out, p->scratch, &e),
                     ERR_INVALID);
    assert_non_null(strstr(e.msg, "cell 5"));
    grid[5] = INFINITY;
    assert_int_equal(ovl_render(p->photo, W, H, grid, 4, 4, "x", p->out, p->scratch, &e),
                     ERR_INVALID);
    grid[5] = 0;
    assert_int_equal(ovl_render(p->photo, 0, H, grid, 4, 4, "x", p->out, p->scratch, &e),
                     ERR_INVALID);
    assert_int_equal(ovl_render(p->photo, W, H, grid, 0, 4, "x", p->out, p->scratch, &e),
                     ERR_INVALID);
    /* a tiny image still renders (decorations clipped) */
    assert_int_equal(ovl_render(p->photo, 3, 2, grid, 4, 4, "grade 4", p->out, p->scratch, &e),
                     ERR_OK);
    free_pic(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_colour_scale_is_jet),
        cmocka_unit_test(test_upsampling_is_bilinear_with_aligned_centres),
        cmocka_unit_test(test_hot_region_takes_the_hot_colour_cold_region_stays),
        cmocka_unit_test(test_legend_bar_shows_the_scale_at_the_right),
        cmocka_unit_test(test_label_changes_pixels_only_in_its_box),
        cmocka_unit_test(test_font_glyphs_and_sizes),
        cmocka_unit_test(test_bad_maps_and_sizes_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
