#include <stdio.h>
#include <stdlib.h>
#include "sieve.h"

int main(int argc, char **argv) {
    size_t limit = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000;
    long n = count_primes(limit);
    if (n < 0) { fprintf(stderr, "out of memory\n"); return 1; }
    printf("%ld primes below %zu\n", n, limit);
    return 0;
}
