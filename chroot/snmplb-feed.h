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

#include <stdio.h>
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

/* Copy the field [start, end) into dst (size n), "-" becoming "". */
static inline void snmplb_feed__copy(char *dst, size_t n, const char *start, const char *end)
{
    size_t len = (size_t)(end - start);
    if (len == 1 && start[0] == '-')
        len = 0;
    if (len >= n)
        len = n - 1;
    memcpy(dst, start, len);
    dst[len] = '\0';
}

static inline double snmplb_feed__number(const char *start, const char *end)
{
    char tmp[32];
    size_t len = (size_t)(end - start);
    if ((len == 1 && start[0] == '-') || len == 0 || len >= sizeof tmp)
        return -1;
    memcpy(tmp, start, len);
    tmp[len] = '\0';
    return strtod(tmp, NULL);
}

/* Parse one message of `len` bytes (not NUL-terminated). Returns 0, or -1 when it
 * is not a well-formed version-1 message (out is then unspecified). */
static inline int snmplb_feed_parse(const char *msg, size_t len, struct snmplb_feed *out)
{
    char head[SNMPLB_FEED_HOST_MAX + 80];
    char magic[16];
    const char *p = msg, *end = msg + len, *nl;
    int i, used = 0;

    memset(out, 0, sizeof *out);
    nl = memchr(p, '\n', len);
    if (!nl || (size_t)(nl - p) >= sizeof head)
        return -1;
    memcpy(head, p, (size_t)(nl - p));
    head[nl - p] = '\0';
    /* %255s: the recommended host's buffer is SNMPLB_FEED_HOST_MAX */
    if (sscanf(head, "%15s %d %lld %255s %d%n", magic, &out->version, &out->refreshed,
               out->recommended, &out->count, &used) != 5 || head[used] != '\0')
        return -1;
    if (strcmp(magic, SNMPLB_FEED_MAGIC) != 0 || out->version != SNMPLB_FEED_VERSION ||
        out->count < 0 || out->count > SNMPLB_FEED_MAX_SERVERS)
        return -1;
    if (strcmp(out->recommended, "-") == 0)
        out->recommended[0] = '\0';
    p = nl + 1;
    for (i = 0; i < out->count; i++) {
        const char *f[9];
        int k;
        struct snmplb_feed_server *s = &out->servers[i];

        nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            return -1;
        f[0] = p;
        for (k = 1; k < 8; k++) {  /* the starts of fields 1..7 */
            const char *tab = memchr(f[k - 1], '\t', (size_t)(nl - f[k - 1]));
            if (!tab)
                return -1;
            f[k] = tab + 1;
        }
        if (memchr(f[7], '\t', (size_t)(nl - f[7])))
            return -1;  /* more than 8 fields */
        f[8] = nl + 1;
        snmplb_feed__copy(s->host, sizeof s->host, f[0], f[1] - 1);
        snmplb_feed__copy(s->state, sizeof s->state, f[1], f[2] - 1);
        s->usable = f[2][0] == '1';
        s->load_per_cpu = snmplb_feed__number(f[3], f[4] - 1);
        s->free_mib = (long)snmplb_feed__number(f[4], f[5] - 1);
        s->sessions = (long)snmplb_feed__number(f[5], f[6] - 1);
        s->answer_ms = snmplb_feed__number(f[6], f[7] - 1);
        snmplb_feed__copy(s->reason, sizeof s->reason, f[7], nl);
        p = nl + 1;
    }
    return 0;
}

#endif /* SNMPLB_FEED_H */
