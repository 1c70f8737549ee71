#include <stdlib.h>
#include <string.h>
#include "sieve.h"

long count_primes(size_t limit) {
    if (limit < 3) return 0;
    unsigned char *composite = calloc(limit, 1);
    if (!composite) return -1;
    long n = 0;
    for (size_t i = 2; i < limit; i++) {
        if (composite[i]) continue;
        n++;
        for (size_t j = i * i; j < limit; j += i) composite[j] = 1;
    }
    free(composite);
    return n;
}
