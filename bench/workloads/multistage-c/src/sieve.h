#ifndef SIEVE_H
#define SIEVE_H
#include <stddef.h>
/* Counts the primes below limit (sieve of Eratosthenes); returns -1 on allocation failure. */
long count_primes(size_t limit);
#endif
