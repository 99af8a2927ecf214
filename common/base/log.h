/* common/base/log.h: leveled, one-line-per-event logging to stderr.
 *
 * JSON lines when stderr is not a terminal (for log shippers), readable text
 * when it is. The macros test the level before formatting anything, so a
 * disabled DEBUG line costs one comparison. Thread-safe (one write per line).
 */
#ifndef STREAMML_LOG_H
#define STREAMML_LOG_H

enum log_level { LOG_LVL_DEBUG = 0, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR, LOG_LVL_OFF };

extern enum log_level log_min_level;

/* mode: -1 auto (JSON unless stderr is a tty), 0 text, 1 JSON. */
void log_init(enum log_level min, int json_mode, const char *component);
/* "debug"|"info"|"warn"|"error"|"off" -> level; returns -1 if unknown. */
int log_level_parse(const char *s);
void log_write(enum log_level lvl, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define LOG_AT(lvl, ...)                                                      \
    do {                                                                      \
        if ((lvl) >= log_min_level)                                           \
            log_write((lvl), __FILE__, __LINE__, __VA_ARGS__);                \
    } while (0)
#define log_debug(...) LOG_AT(LOG_LVL_DEBUG, __VA_ARGS__)
#define log_info(...) LOG_AT(LOG_LVL_INFO, __VA_ARGS__)
#define log_warn(...) LOG_AT(LOG_LVL_WARN, __VA_ARGS__)
#define log_error(...) LOG_AT(LOG_LVL_ERROR, __VA_ARGS__)

#endif
