/* streamml abtest on the clickstream's outcome records (schemas/click_outcome.avsc):
 * per arm, the business metrics of issue 20 per user with delta-method
 * intervals (common/streams/abtest.h ab_ratio_delta):
 *
 *   CTR              click-throughs / impressions
 *   add-to-cart      carts / impressions
 *   conversion       purchases / impressions
 *   revenue per user revenue / users
 *
 * the unit being the experiment's assignment unit (unit_id: the user, or
 * the session). A redelivered duplicate (same outcome_id) counts once.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "abtest.h"
#include "abtest_click.h"
#include "click_event.h"
#include "cmds.h"
#include "codec.h"
#include "kafka.h"
#include "pipeline.h"
#include "registry.h"
#include "topic_json.h"

#define LINE_MAX_BYTES (1024 * 1024)

struct orec {
    char id[CLICK_ID_MAX + 160];
    char variant[AB_NAME_MAX];
    char unit[CLICK_ID_MAX];
    int type; /* enum click_outcome_type */
    double revenue;
};

struct orecs {
    struct orec *r;
    size_t n, cap, dup, other;
    char experiment[AB_ID_MAX];
};

static const char *jstr(json_t *j, const char *k)
{
    return json_string_value(json_object_get(j, k));
}

/* One outcome record (JSON as `streamml consume` prints it). */
static int add(struct orecs *o, json_t *j, const char *where, struct err *e)
{
    const char *id = jstr(j, "outcome_id"), *ty = jstr(j, "outcome_type");
    const char *ex = jstr(j, "experiment_id"), *va = jstr(j, "variant"), *un = jstr(j, "unit_id");
    json_t *rv = json_object_get(j, "revenue");
    struct orec *r;
    int t;

    if (!id || !ty || !ex || !va || !un || !json_is_number(rv) ||
        !isfinite(json_number_value(rv)))
        return err_set(e, ERR_DECODE,
                       "%s: not an outcome record (needs outcome_id, outcome_type, experiment_id, "
                       "variant, unit_id and a finite revenue)",
                       where);
    for (t = OUT_IMPRESSION; t <= OUT_PURCHASE; t++)
        if (!strcmp(ty, click_outcome_type_name((enum click_outcome_type)t)))
            break;
    if (t > OUT_PURCHASE)
        return err_set(e, ERR_DECODE, "%s: outcome_type \"%.20s\"", where, ty);
    if (strlen(id) >= sizeof(r->id) || strlen(va) >= AB_NAME_MAX || strlen(un) >= CLICK_ID_MAX ||
        strlen(ex) >= AB_ID_MAX)
        return err_set(e, ERR_DECODE, "%s: an id too long", where);
    if (!o->experiment[0])
        snprintf(o->experiment, sizeof(o->experiment), "%s", ex);
    if (strcmp(ex, o->experiment)) {
        o->other++;
        return ERR_OK;
    }
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 4096;
        struct orec *nr = realloc(o->r, cap * sizeof(*nr));
        if (!nr)
            return err_set(e, ERR_NOMEM, "out of memory for %zu outcomes", cap);
        o->r = nr;
        o->cap = cap;
    }
    r = &o->r[o->n++];
    snprintf(r->id, sizeof(r->id), "%s", id);
    snprintf(r->variant, sizeof(r->variant), "%s", va);
    snprintf(r->unit, sizeof(r->unit), "%s", un);
    r->type = t;
    r->revenue = json_number_value(rv);
    return ERR_OK;
}

static int read_file(struct orecs *o, const char *path, struct err *e)
{
    FILE *f = fopen(path, "r");
    char *line = NULL, where[600];
    size_t cap = 0;
    long no = 0;
    int rc = ERR_OK;

    if (!f)
        return err_set(e, ERR_IO, "%s: cannot open", path);
    while (rc == ERR_OK && getline(&line, &cap, f) > 0) {
        json_t *j;
        no++;
        if (line[strspn(line, " \t\r\n")] == '\0')
            continue;
        snprintf(where, sizeof(where), "%.500s:%ld", path, no);
        if (!(j = json_loads(line, 0, NULL)))
            rc = err_set(e, ERR_DECODE, "%s: not JSON", where);
        else {
            rc = add(o, j, where, e);
            json_decref(j);
        }
    }
    free(line);
    fclose(f);
    return rc;
}

static int add_record(void *o, json_t *j, const char *where, struct err *e)
{
    return add(o, j, where, e);
}

static int by_id(const void *a, const void *b)
{
    return strcmp(((const struct orec *)a)->id, ((const struct orec *)b)->id);
}

static int by_arm_unit(const void *a, const void *b)
{
    const struct orec *x = a, *y = b;
    int c = strcmp(x->variant, y->variant);
    return c ? c : strcmp(x->unit, y->unit);
}

/* One arm's per-unit sums. */
struct arm {
    char name[AB_NAME_MAX];
    size_t units;
    double *imp, *cnt[3], *rev, *one; /* per unit: impressions, clicks/carts/purchases, revenue */
    double tot_imp, tot[3], tot_rev;
    struct ab_ratio m[4]; /* CTR, add-to-cart, conversion, revenue per user */
    int ok[4];
};

static const char *const metric_names[4] = {"ctr", "add_to_cart", "conversion", "revenue_per_user"};

static int build_arms(struct orecs *o, struct arm *arms, size_t *n_arms, double conf,
                      struct err *e)
{
    size_t i = 0;

    *n_arms = 0;
    while (i < o->n) {
        size_t j = i, u = 0;
        struct arm *a;
        if (*n_arms == AB_MAX_VARIANTS)
            return err_set(e, ERR_DECODE, "more than %d arms", AB_MAX_VARIANTS);
        a = &arms[(*n_arms)++];
        memset(a, 0, sizeof(*a));
        snprintf(a->name, sizeof(a->name), "%s", o->r[i].variant);
        while (j < o->n && !strcmp(o->r[j].variant, a->name))
            j++;
        a->imp = calloc(j - i, sizeof(double));
        a->rev = calloc(j - i, sizeof(double));
        a->one = calloc(j - i, sizeof(double));
        for (int k = 0; k < 3; k++)
            a->cnt[k] = calloc(j - i, sizeof(double));
        if (!a->imp || !a->rev || !a->one || !a->cnt[0] || !a->cnt[1] || !a->cnt[2])
            return err_set(e, ERR_NOMEM, "out of memory");
        for (size_t k = i; k < j; k++) {
            const struct orec *r = &o->r[k];
            if (k > i && strcmp(r->unit, o->r[k - 1].unit))
                u++;
            a->one[u] = 1;
            if (r->type == OUT_IMPRESSION)
                a->imp[u]++;
            else
                a->cnt[r->type - 1][u]++;
            a->rev[u] += r->revenue;
        }
        a->units = u + 1;
        for (size_t k = 0; k < a->units; k++) {
            a->tot_imp += a->imp[k];
            a->tot_rev += a->rev[k];
            for (int q = 0; q < 3; q++)
                a->tot[q] += a->cnt[q][k];
        }
        for (int q = 0; q < 4; q++) {
            struct err ig = {0};
            a->ok[q] = !ab_ratio_delta(q < 3 ? a->cnt[q] : a->rev, q < 3 ? a->imp : a->one,
                                       a->units, conf, &a->m[q], &ig);
        }
        i = j;
    }
    return ERR_OK;
}

static void free_arms(struct arm *arms, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(arms[i].imp);
        free(arms[i].rev);
        free(arms[i].one);
        for (int k = 0; k < 3; k++)
            free(arms[i].cnt[k]);
    }
}

static void print_table(const struct orecs *o, const struct arm *arms, size_t n, size_t ctl,
                        double conf)
{
    printf("experiment %s, control %s: %zu outcome(s), %zu duplicate(s) skipped, %zu of other "
           "experiments\n",
           o->experiment[0] ? o->experiment : "(none)", arms[ctl].name, o->n, o->dup, o->other);
    printf("%-12s %7s %8s %6s %5s %6s  %-26s %-26s %-26s %s\n", "variant", "users", "impr",
           "clicks", "carts", "purch", "CTR", "add-to-cart", "conversion", "revenue/user");
    for (size_t i = 0; i < n; i++) {
        const struct arm *a = &arms[i];
        char cell[4][64];
        for (int q = 0; q < 4; q++) {
            if (!a->ok[q])
                snprintf(cell[q], sizeof(cell[q]), "-");
            else if (q < 3)
                snprintf(cell[q], sizeof(cell[q]), "%.4f [%.4f, %.4f]", a->m[q].value,
                         a->m[q].lo, a->m[q].hi);
            else
                snprintf(cell[q], sizeof(cell[q]), "%.2f [%.2f, %.2f]", a->m[q].value,
                         a->m[q].lo, a->m[q].hi);
        }
        printf("%-12s %7zu %8.0f %6.0f %5.0f %6.0f  %-26s %-26s %-26s %s\n",
               a->name[0] ? a->name : "(none)", a->units, a->tot_imp, a->tot[0], a->tot[1],
               a->tot[2], cell[0], cell[1], cell[2], cell[3]);
    }
    printf("intervals: %.0f%%, delta method over users (the assignment unit), t quantile with "
           "users - 1 df; difference to the control in --json\n",
           100 * conf);
}

static void print_json(const struct orecs *o, const struct arm *arms, size_t n, size_t ctl,
                       double conf)
{
    json_t *root = json_object(), *list = json_array();
    char *s;

    json_object_set_new(root, "experiment", json_string(o->experiment));
    json_object_set_new(root, "control", json_string(arms[ctl].name));
    json_object_set_new(root, "confidence", json_real(conf));
    json_object_set_new(root, "interval", json_string("delta method over users"));
    json_object_set_new(root, "outcomes", json_integer((json_int_t)o->n));
    json_object_set_new(root, "duplicates", json_integer((json_int_t)o->dup));
    for (size_t i = 0; i < n; i++) {
        const struct arm *a = &arms[i], *c = &arms[ctl];
        json_t *v = json_object();
        json_object_set_new(v, "variant", json_string(a->name));
        json_object_set_new(v, "users", json_integer((json_int_t)a->units));
        json_object_set_new(v, "impressions", json_real(a->tot_imp));
        json_object_set_new(v, "clicks", json_real(a->tot[0]));
        json_object_set_new(v, "carts", json_real(a->tot[1]));
        json_object_set_new(v, "purchases", json_real(a->tot[2]));
        json_object_set_new(v, "revenue", json_real(a->tot_rev));
        for (int q = 0; q < 4; q++) {
            json_t *m = json_object();
            if (a->ok[q]) {
                double z = ab_t_ppf((1 + conf) / 2, 1e9); /* independent arms: normal */
                double d = a->m[q].value - c->m[q].value;
                double se = sqrt(a->m[q].se * a->m[q].se + c->m[q].se * c->m[q].se);
                json_object_set_new(m, "value", json_real(a->m[q].value));
                json_object_set_new(m, "se", json_real(a->m[q].se));
                json_object_set_new(m, "lo", json_real(a->m[q].lo));
                json_object_set_new(m, "hi", json_real(a->m[q].hi));
                if (c->ok[q] && i != ctl) {
                    json_object_set_new(m, "diff", json_real(d));
                    json_object_set_new(m, "diff_lo", json_real(d - z * se));
                    json_object_set_new(m, "diff_hi", json_real(d + z * se));
                }
            }
            json_object_set_new(v, metric_names[q], m);
        }
        json_array_append_new(list, v);
    }
    json_object_set_new(root, "variants", list);
    s = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    if (s)
        puts(s);
    free(s);
    json_decref(root);
}

int abtest_click(const char *path, const char *topic, const struct cfg *cf,
                 const char *experiment, const char *control, double conf, int json)
{
    struct orecs o = {0};
    struct arm arms[AB_MAX_VARIANTS];
    size_t n_arms = 0, ctl = 0, w = 0;
    struct err e = {0};
    int rc = EXIT_OK;

    if (experiment)
        snprintf(o.experiment, sizeof(o.experiment), "%s", experiment);
    if (path ? read_file(&o, path, &e) : tj_read_topic(topic, cf, "streamml-abtest", add_record, &o, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        free(o.r);
        return EXIT_RUNTIME;
    }
    qsort(o.r, o.n, sizeof(*o.r), by_id);
    for (size_t i = 0; i < o.n; i++) /* a redelivery re-published: the same id, once */
        if (w == 0 || strcmp(o.r[i].id, o.r[w - 1].id))
            o.r[w++] = o.r[i];
    o.dup = o.n - w;
    o.n = w;
    qsort(o.r, o.n, sizeof(*o.r), by_arm_unit);
    if (!o.n) {
        fprintf(stderr, "error: %s: no outcome records of experiment %s\n", path ? path : topic,
                o.experiment[0] ? o.experiment : "(any)");
        rc = EXIT_RUNTIME;
    } else if (build_arms(&o, arms, &n_arms, conf, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        rc = EXIT_RUNTIME;
    } else {
        for (ctl = 0; control && ctl < n_arms && strcmp(arms[ctl].name, control); ctl++)
            ;
        if (ctl == n_arms) {
            fprintf(stderr, "error: --control %s: no such variant\n", control);
            rc = EXIT_USAGE;
        } else if (json) {
            print_json(&o, arms, n_arms, ctl, conf);
        } else {
            print_table(&o, arms, n_arms, ctl, conf);
        }
    }
    free_arms(arms, n_arms);
    free(o.r);
    return rc;
}
