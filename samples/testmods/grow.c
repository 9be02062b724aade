/* grow: allocates and touches 1 MiB blocks forever; aborts (a trap) when malloc fails.
 * Each block escapes through a volatile global so the compiler cannot elide the allocation. */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
char *volatile sink;
int main(void) {
    for (unsigned long i = 0;; i++) {
        char *p = malloc(1 << 20);
        if (!p) { fprintf(stderr, "malloc failed after %lu MiB\n", i); abort(); }
        memset(p, (int)i, 1 << 20);
        sink = p;
    }
}
