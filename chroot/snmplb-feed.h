/* snmplb-feed.h: read snmplb's server states (`snmplb feed`) in a C greeter.
 *
 * The feed publishes each refresh on the POSIX message queue SNMPLB_FEED_QUEUE
 * (one message slot; the newest state waits there for a reader) as text:
 *
 *   SNMPLB-FEED 1 <refresh unix time> <recommended host or -> <number of server lines>\n
 *   <host>\t<state>\t<usable 1|0>\t<load per CPU>\t<free MiB>\t<sessions>\t<answer ms>\t<reason>\n
 *
 * Every field is present and never empty; "-" means unknown (numbers) or none
 * (recommended, reason). Hosts and reasons hold no tab, newline or other control
 * character. docs/feed.md describes the fields and the feed's options.
 * snmplb_feed_parse refuses a message that breaks a rule (it never cuts a field
 * to fit, nor reads a number it cannot hold): show the last good one.
 *
 * Use (link with -lrt on glibc before 2.34):
 *
 *   mqd_t q = mq_open(SNMPLB_FEED_QUEUE, O_RDONLY);
 *   if (q == (mqd_t)-1 || snmplb_feed_trusted(q, getuid()) != 0) ...   // no feed, or not the feed's
 *   char buf[SNMPLB_FEED_MSGSIZE];
 *   ssize_t n = mq_receive(q, buf, sizeof buf, NULL);   // blocks until the next refresh
 *   static struct snmplb_feed feed;
 *   if (n >= 0 && snmplb_feed_parse(buf, (size_t)n, &feed) == 0) ...
 *
 * Header-only, C99, no allocation. SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SNMPLB_FEED_H
#define SNMPLB_FEED_H

#include <limits.h>
#include <stdio.h>   /* not used here: kept for the readers that relied on it */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#define SNMPLB_FEED_MAGIC "SNMPLB-FEED"
#define SNMPLB_FEED_VERSION 1
#define SNMPLB_FEED_QUEUE "/snmplb-feed"
#define SNMPLB_FEED_MSGSIZE 8192      /* the queue's message size: a message never exceeds it */
#define SNMPLB_FEED_MAX_SERVERS 128   /* more lines than fit in a message cannot come */
#define SNMPLB_FEED_HOST_MAX 256      /* bytes with the terminating NUL */
#define SNMPLB_FEED_STATE_MAX 16
#define SNMPLB_FEED_REASON_MAX 121

/* The state words (a newer feed may send others: show them as they come). */
#define SNMPLB_FEED_DOWN "Down"
#define SNMPLB_FEED_IDLE "Idle"
#define SNMPLB_FEED_BUSY "Busy"
#define SNMPLB_FEED_SWAPPING "Swapping"
#define SNMPLB_FEED_FULL "Full"
#define SNMPLB_FEED_DRAINING "Draining"
#define SNMPLB_FEED_DISABLED "Disabled"
#define SNMPLB_FEED_UNAVAILABLE "Unavailable"

struct snmplb_feed_server {
    char host[SNMPLB_FEED_HOST_MAX];
    char state[SNMPLB_FEED_STATE_MAX];
    int usable;                 /* 1: may take a login now */
    double load_per_cpu;        /* < 0: unknown (the server did not answer) */
    long free_mib;              /* < 0: unknown */
    long sessions;              /* < 0: unknown */
    double answer_ms;           /* < 0: unknown */
    char reason[SNMPLB_FEED_REASON_MAX];  /* why down or unavailable; "" when none */
};

struct snmplb_feed {
    int version;
    long long refreshed;        /* Unix time of the poll */
    char recommended[SNMPLB_FEED_HOST_MAX];  /* "" when no server is usable */
    int count;
    struct snmplb_feed_server servers[SNMPLB_FEED_MAX_SERVERS];
};

/* 0 when the open queue `fd` (an mqd_t is a descriptor on Linux) may be believed as the feed's:
 * owned by `feed_uid` (the user the feed runs as: the greeter's own, getuid()) or by root, with
 * mode 0600 or 0640 exactly (nobody but its owner may write it); -1 otherwise. Check the descriptor
 * you read, never the name: any local user can create a queue of that name before the feed, and
 * queues outlive their creator (docs/feed.md, "The queue"). */
static inline int snmplb_feed_trusted(int fd, uid_t feed_uid)
{
    struct stat st;
    mode_t mode;

    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return -1;
    mode = st.st_mode & 07777;
    if (st.st_uid != feed_uid && st.st_uid != 0)
        return -1;
    return mode == 0600 || mode == 0640 ? 0 : -1;
}

/* A text field [start, end): never empty, no control byte (the format's rule), and it fits with its NUL
 * in dst (size n): copied, "-" becoming "". Returns 0, or -1 (nothing is ever cut). */
static inline int snmplb_feed__text(char *dst, size_t n, const char *start, const char *end)
{
    size_t i, len = (size_t)(end - start);

    if (len == 0 || len >= n)
        return -1;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)start[i];
        if (c < 0x20 || c == 0x7f)
            return -1;
    }
    if (len == 1 && start[0] == '-')
        len = 0;
    memcpy(dst, start, len);
    dst[len] = '\0';
    return 0;
}

/* A whole number token [start, end): 1 to `max_digits` decimal digits, nothing else (no sign, no
 * blank). With max_digits at most 18 it always fits in a long long. */
static inline int snmplb_feed__whole(long long *out, const char *start, const char *end, int max_digits)
{
    long long value = 0;
    const char *p;

    if (start == end || end - start > max_digits)
        return -1;
    for (p = start; p < end; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        value = value * 10 + (*p - '0');
    }
    *out = value;
    return 0;
}

/* A count field (free MiB, sessions): "-" (unknown: -1) or at most 18 digits; a count beyond
 * LONG_MAX (a 32-bit long) reads as LONG_MAX. */
static inline int snmplb_feed__count(long *out, const char *start, const char *end)
{
    long long n;

    if (end - start == 1 && start[0] == '-') {
        *out = -1;
        return 0;
    }
    if (snmplb_feed__whole(&n, start, end, 18) != 0)
        return -1;
    *out = n > LONG_MAX ? LONG_MAX : (long)n;
    return 0;
}

/* A decimal field (load per CPU, answer ms): "-" (unknown: -1), or 1 to 15 digits, optionally a
 * '.' and 1 to 6 digits. Read without strtod (whose decimal point follows the greeter's locale);
 * anything else (empty, a sign, blanks, an exponent, inf, nan) is refused: the value is always finite. */
static inline int snmplb_feed__decimal(double *out, const char *start, const char *end)
{
    const char *dot = memchr(start, '.', (size_t)(end - start));
    long long whole, fraction = 0, scale = 1;

    if (end - start == 1 && start[0] == '-') {
        *out = -1;
        return 0;
    }
    if (snmplb_feed__whole(&whole, start, dot ? dot : end, 15) != 0)
        return -1;
    if (dot) {
        int k;
        if (snmplb_feed__whole(&fraction, dot + 1, end, 6) != 0)
            return -1;
        for (k = 0; k < end - dot - 1; k++)
            scale *= 10;
    }
    *out = (double)whole + (double)fraction / (double)scale;
    return 0;
}

/* Parse one message of `len` bytes (not NUL-terminated). Returns 0, or -1 when it is not a
 * well-formed version-1 message (out is then unspecified). Well-formed is what the feed sends:
 * the header's five fields separated by single spaces, exactly `count` server lines and nothing
 * after them, every field present and never empty, no control byte in a text field, every text
 * field within its buffer (a longer one is refused, never cut), numbers as decimal digits (the
 * refresh time and the counts at most 18, load and answer time at most 15 before the point and 6
 * after it): never a number out of range, inf or nan. */
static inline int snmplb_feed_parse(const char *msg, size_t len, struct snmplb_feed *out)
{
    const char *p = msg, *end = msg + len, *nl;
    const char *f[6];
    long long n;
    int i, k;

    memset(out, 0, sizeof *out);
    nl = memchr(p, '\n', len);
    if (!nl)
        return -1;
    f[0] = p;  /* the header's fields: magic version time recommended count */
    for (k = 1; k < 5; k++) {
        const char *sp = memchr(f[k - 1], ' ', (size_t)(nl - f[k - 1]));
        if (!sp)
            return -1;
        f[k] = sp + 1;
    }
    f[5] = nl + 1;
    if (memchr(f[4], ' ', (size_t)(nl - f[4])))
        return -1;  /* more than 5 fields */
    if ((size_t)(f[1] - 1 - f[0]) != strlen(SNMPLB_FEED_MAGIC) ||
        memcmp(f[0], SNMPLB_FEED_MAGIC, strlen(SNMPLB_FEED_MAGIC)) != 0)
        return -1;
    if (snmplb_feed__whole(&n, f[1], f[2] - 1, 9) != 0 || n != SNMPLB_FEED_VERSION)
        return -1;
    out->version = (int)n;
    if (snmplb_feed__whole(&out->refreshed, f[2], f[3] - 1, 18) != 0)
        return -1;
    if (snmplb_feed__text(out->recommended, sizeof out->recommended, f[3], f[4] - 1) != 0)
        return -1;
    if (snmplb_feed__whole(&n, f[4], nl, 9) != 0 || n > SNMPLB_FEED_MAX_SERVERS)
        return -1;
    out->count = (int)n;
    p = nl + 1;
    for (i = 0; i < out->count; i++) {
        const char *g[9];
        struct snmplb_feed_server *s = &out->servers[i];

        nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            return -1;
        g[0] = p;
        for (k = 1; k < 8; k++) {  /* the starts of fields 1..7 */
            const char *tab = memchr(g[k - 1], '\t', (size_t)(nl - g[k - 1]));
            if (!tab)
                return -1;
            g[k] = tab + 1;
        }
        if (memchr(g[7], '\t', (size_t)(nl - g[7])))
            return -1;  /* more than 8 fields */
        g[8] = nl + 1;
        if (snmplb_feed__text(s->host, sizeof s->host, g[0], g[1] - 1) != 0 ||
            snmplb_feed__text(s->state, sizeof s->state, g[1], g[2] - 1) != 0)
            return -1;
        if (g[3] - 1 - g[2] != 1 || (g[2][0] != '0' && g[2][0] != '1'))
            return -1;
        s->usable = g[2][0] == '1';
        if (snmplb_feed__decimal(&s->load_per_cpu, g[3], g[4] - 1) != 0 ||
            snmplb_feed__count(&s->free_mib, g[4], g[5] - 1) != 0 ||
            snmplb_feed__count(&s->sessions, g[5], g[6] - 1) != 0 ||
            snmplb_feed__decimal(&s->answer_ms, g[6], g[7] - 1) != 0)
            return -1;
        if (snmplb_feed__text(s->reason, sizeof s->reason, g[7], nl) != 0)
            return -1;
        p = nl + 1;
    }
    return p == end ? 0 : -1;  /* the header counts every line there is */
}

#endif /* SNMPLB_FEED_H */
