#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum log_level log_min_level = LOG_LVL_INFO;
static int g_json;
static char g_component[32] = "streamml";

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void log_init(enum log_level min, int json_mode, const char *component)
{
    log_min_level = min;
    g_json = json_mode < 0 ? !isatty(STDERR_FILENO) : json_mode;
    if (component)
        snprintf(g_component, sizeof(g_component), "%s", component);
}

int log_level_parse(const char *s)
{
    for (int i = 0; i <= LOG_LVL_OFF; i++)
        if (s && strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

/* Escapes for a JSON string body; output is always NUL-terminated. */
static void json_escape(char *dst, size_t cap, const char *src)
{
    size_t o = 0;

    for (; *src && o + 7 < cap; src++) {
        unsigned char c = (unsigned char)*src;
        if (c == '"' || c == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(dst + o, cap - o, "\\u%04x", c);
        } else {
            dst[o++] = (char)c;
        }
    }
    dst[o] = '\0';
}

void log_write(enum log_level lvl, const char *file, int line, const char *fmt, ...)
{
    char msg[1024], esc[2048], out[2400], ts[32];
    struct timeval tv;
    struct tm tm;
    const char *base = strrchr(file, '/');
    va_list ap;
    int n;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    base = base ? base + 1 : file;
    if (g_json) {
        json_escape(esc, sizeof(esc), msg);
        n = snprintf(out, sizeof(out),
                     "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"component\":\"%s\","
                     "\"src\":\"%s:%d\",\"msg\":\"%s\"}\n",
                     ts, (long)tv.tv_usec / 1000, level_names[lvl], g_component, base, line, esc);
    } else {
        n = snprintf(out, sizeof(out), "%s.%03ldZ %-5s %s: %s\n", ts, (long)tv.tv_usec / 1000,
                     level_names[lvl], g_component, msg);
    }
    if (n > (int)sizeof(out) - 1)
        n = (int)sizeof(out) - 1;
    /* One write() per line so concurrent writers never interleave a line. */
    if (write(STDERR_FILENO, out, (size_t)n) < 0)
        return;
}
