/* common/reasons.c: reason texts shipped with a model (see reasons.h). */
#include "reasons.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILE (1 << 20)

struct reasons {
    size_t n;
    char (*text)[REASONS_MAX_TEXT];
};

static int find(const struct gbdt *g, const char *name)
{
    for (size_t i = 0; i < gbdt_num_features(g); i++) {
        const char *f = gbdt_feature_name(g, i);
        if (f && strcmp(f, name) == 0)
            return (int)i;
    }
    return -1;
}

static int load(struct reasons *r, const char *path, const struct gbdt *g, struct err *e)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je), *tab, *v;
    const char *fmt, *key;
    int rc = ERR_OK;

    if (!root)
        return err_set(e, ERR_CONFIG, "%s:%d: %s", path, je.line, je.text);
    fmt = json_string_value(json_object_get(root, "format"));
    tab = json_object_get(root, "reasons");
    if (!fmt || strcmp(fmt, "streamml-reasons") != 0 || !json_is_object(tab))
        rc = err_set(e, ERR_CONFIG,
                     "%s: not a reason table (\"format\": \"streamml-reasons\" and a "
                     "\"reasons\" object expected)",
                     path);
    json_object_foreach(rc ? NULL : tab, key, v)
    {
        int i = find(g, key);
        const char *t = json_string_value(v);
        if (i < 0)
            rc = err_set(e, ERR_CONFIG, "%s: reasons.%s: the model has no such feature", path, key);
        else if (!t || !*t || strlen(t) >= REASONS_MAX_TEXT)
            rc = err_set(e, ERR_CONFIG, "%s: reasons.%s: not a text of 1..%d bytes", path, key,
                         REASONS_MAX_TEXT - 1);
        else
            memcpy(r->text[i], t, strlen(t) + 1);
        if (rc)
            break;
    }
    json_decref(root);
    return rc;
}

struct reasons *reasons_open(const char *path, const struct gbdt *g, struct err *e)
{
    struct reasons *r = calloc(1, sizeof(*r));
    size_t n = gbdt_num_features(g);

    if (r)
        r->text = calloc(n ? n : 1, sizeof(*r->text));
    if (!r || !r->text) {
        reasons_close(r);
        err_set(e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    r->n = n;
    for (size_t i = 0; i < n; i++) {
        const char *f = gbdt_feature_name(g, i);
        if (f)
            snprintf(r->text[i], REASONS_MAX_TEXT, "%s", f);
        else
            snprintf(r->text[i], REASONS_MAX_TEXT, "f%zu", i);
    }
    if (path && *path && load(r, path, g, e)) {
        reasons_close(r);
        return NULL;
    }
    return r;
}

void reasons_close(struct reasons *r)
{
    if (!r)
        return;
    free(r->text);
    free(r);
}

const char *reasons_text(const struct reasons *r, size_t i)
{
    return i < r->n ? r->text[i] : "";
}
