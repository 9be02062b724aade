/* matmul: multiplies two deterministic n x n double matrices (n = argv[1], default 200) and prints
 * the sum of all entries of C = A * B, both as %.6f and as the raw IEEE-754 bits in hex.
 *   A[i][k] = ((i * 7 + k * 3) % 11) / 4.0 - 1.0      B[k][j] = ((k * 5 + j * 13) % 17) / 8.0 - 1.0
 *   C[i][j] = sum over k = 0..n-1 in order of A[i][k] * B[k][j]   (accumulated from 0.0)
 *   checksum = sum of C in row-major order (accumulated from 0.0). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 200;
    if (n < 1 || n > 4096) { fprintf(stderr, "n must be in 1..4096\n"); return 2; }
    double *a = malloc(sizeof(double) * n * n), *b = malloc(sizeof(double) * n * n), *c = calloc(n * n, sizeof(double));
    if (!a || !b || !c) { fprintf(stderr, "out of memory\n"); return 3; }
    for (long i = 0; i < n; i++)
        for (long j = 0; j < n; j++) {
            a[i * n + j] = (double)((i * 7 + j * 3) % 11) / 4.0 - 1.0;
            b[i * n + j] = (double)((i * 5 + j * 13) % 17) / 8.0 - 1.0;
        }
    for (long i = 0; i < n; i++)
        for (long k = 0; k < n; k++) {
            double aik = a[i * n + k];
            for (long j = 0; j < n; j++) c[i * n + j] += aik * b[k * n + j];
        }
    double sum = 0.0;
    for (long i = 0; i < n * n; i++) sum += c[i];
    uint64_t bits;
    memcpy(&bits, &sum, sizeof bits);
    printf("n=%ld checksum=%.6f bits=%016llx\n", n, sum, (unsigned long long)bits);
    free(a); free(b); free(c);
    return 0;
}
