/* feed_fuzz: mutate well-formed feed messages and parse each with snmplb_feed_parse.
 *
 *   feed_fuzz SEED ITERATIONS
 *
 * Built with -fsanitize=address,undefined -fno-sanitize-recover=all by the tests: any read past the
 * message (each parsed from a heap buffer of its exact size), any write past a field's buffer, any
 * undefined conversion or overflow aborts. A message the parser accepts must keep the header's
 * promises (checked here: strings within their buffers, no control byte, numbers -1 or finite and
 * not negative, count within bounds); a broken promise exits 4. Exit 0 and one line of counts when
 * every message was parsed or refused cleanly.
 */
#define _POSIX_C_SOURCE 200809L
#include "snmplb-feed.h"

#define ROOM (80 * 1024)  /* a mutated message may grow past a queue message: the parser gets its length */

static unsigned long long state;

static unsigned long long next(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

static size_t below(size_t n)
{
    return n ? (size_t)(next() % n) : 0;
}

static const char *const TOKENS[] = {
    "1e300", "nan", "inf", "-inf", "-", "", "\t", "\n", " ", "  ", "-1", "0x10", "1.", ".5", "1.2.3", "+3",
    "99999999999999999999999999999999", "1000000000000000000000000000000", "9223372036854775807",
    "9223372036854775808", "2147483648", "4294967295", "1234567890123456", "0.1234567", "SNMPLB-FEED 1 ",
    "SNMPLB-FEED", "128", "129", "0", "1", "\x7f", "\x01", "\xff\xfe", "Unavailable", "Swapping-and-more",
};
#define NTOKENS (sizeof TOKENS / sizeof TOKENS[0])

static size_t seed_message(char *buf, int which)
{
    size_t n = 0;
    int i, rows;

    switch (which % 4) {
    case 0:
        return (size_t)sprintf(buf, "SNMPLB-FEED 1 1700000000 a 2\na\tIdle\t1\t0.20\t1024\t2\t1.5\t-\n"
                                    "b\tDown\t0\t-\t-\t-\t-\tno answer within 500 ms\n");
    case 1:  /* the most lines */
        n = (size_t)sprintf(buf, "SNMPLB-FEED 1 1 s0 128\n");
        for (i = 0; i < 128; i++)
            n += (size_t)sprintf(buf + n, "s%d\tBusy\t1\t12.34\t4096\t10\t2.0\t-\n", i);
        return n;
    case 2:  /* the longest fields */
        rows = 20;
        n = (size_t)sprintf(buf, "SNMPLB-FEED 1 4294967295 %.*s %d\n", 255, "", rows);
        memset(buf + 25, 'h', 255);
        for (i = 0; i < rows; i++) {
            n += (size_t)sprintf(buf + n, "%03d", i);
            memset(buf + n, 'h', 252);
            n += 252;
            n += (size_t)sprintf(buf + n, "\tUnavailable\t0\t42949672.95\t4194303\t4294967295\t99999.9\t");
            memset(buf + n, 'r', 120);
            n += 120;
            buf[n++] = '\n';
        }
        return n;
    default:
        return (size_t)sprintf(buf, "SNMPLB-FEED 1 0 - 0\n");
    }
}

static void mutate(char *buf, size_t *len)
{
    size_t n = *len, at = below(n + 1), span;
    const char *tok;
    size_t tl;

    switch (next() % 7) {
    case 0:  /* a byte changed */
        if (n)
            buf[below(n)] = (char)next();
        break;
    case 1:  /* a token inserted */
    case 2:
        tok = TOKENS[below(NTOKENS)];
        tl = strlen(tok);
        if (n + tl < ROOM) {
            memmove(buf + at + tl, buf + at, n - at);
            memcpy(buf + at, tok, tl);
            n += tl;
        }
        break;
    case 3:  /* a field replaced by a token: from `at` to the next separator */
        span = 0;
        while (at + span < n && buf[at + span] != '\t' && buf[at + span] != '\n' && buf[at + span] != ' ')
            span++;
        tok = TOKENS[below(NTOKENS)];
        tl = strlen(tok);
        if (n - span + tl < ROOM) {
            memmove(buf + at + tl, buf + at + span, n - at - span);
            memcpy(buf + at, tok, tl);
            n = n - span + tl;
        }
        break;
    case 4:  /* a range deleted */
        span = below(n - at + 1);
        memmove(buf + at, buf + at + span, n - at - span);
        n -= span;
        break;
    case 5:  /* a long run inserted (a 65,000-byte host, a 300-byte state) */
        span = below(2) ? 300 : 65000;
        if (n + span < ROOM) {
            memmove(buf + at + span, buf + at, n - at);
            memset(buf + at, "x9.-"[below(4)], span);
            n += span;
        }
        break;
    default:  /* cut short */
        n = at;
        break;
    }
    *len = n;
}

static int text_ok(const char *s, size_t size)
{
    const char *nul = memchr(s, '\0', size);
    const char *p;

    if (!nul)
        return 0;
    for (p = s; p < nul; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return 0;
    return 1;
}

static int number_ok(double x)
{
    return x == -1 || (x >= 0 && x < 1e16);  /* also false for nan */
}

static int promises_kept(const struct snmplb_feed *f)
{
    int i;

    if (f->version != SNMPLB_FEED_VERSION || f->count < 0 || f->count > SNMPLB_FEED_MAX_SERVERS ||
        f->refreshed < 0 || !text_ok(f->recommended, sizeof f->recommended))
        return 0;
    for (i = 0; i < f->count; i++) {
        const struct snmplb_feed_server *s = &f->servers[i];
        if (!text_ok(s->host, sizeof s->host) || !text_ok(s->state, sizeof s->state) ||
            !text_ok(s->reason, sizeof s->reason) || (s->usable != 0 && s->usable != 1) ||
            !number_ok(s->load_per_cpu) || !number_ok(s->answer_ms) || s->free_mib < -1 || s->sessions < -1)
            return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    static char work[ROOM];
    static struct snmplb_feed feed;
    long i, iterations, parsed = 0;

    if (argc != 3)
        return 1;
    state = strtoull(argv[1], NULL, 10) * 2654435761ULL + 1;
    iterations = atol(argv[2]);
    for (i = 0; i < iterations; i++) {
        size_t len = seed_message(work, (int)(i % 4));
        int k, rounds = 1 + (int)below(4);
        char *exact;

        for (k = 0; k < rounds; k++)
            mutate(work, &len);
        exact = malloc(len ? len : 1);
        if (!exact)
            return 1;
        memcpy(exact, work, len);
        if (snmplb_feed_parse(exact, len, &feed) == 0) {
            parsed++;
            if (!promises_kept(&feed)) {
                fprintf(stderr, "iteration %ld: a parsed message broke a promise\n", i);
                return 4;
            }
        }
        free(exact);
    }
    printf("fuzz: %ld messages, %ld parsed, %ld refused\n", iterations, parsed, iterations - parsed);
    return 0;
}
