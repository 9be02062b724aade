/* recurse: unbounded recursion with no locals in linear memory, so it overflows the
 * WebAssembly (native) stack rather than the C shadow stack. The volatile store after the
 * call keeps the compiler from turning the recursion into a loop. */
#include <stdio.h>
static volatile unsigned long sink;
static volatile unsigned long limit = ~0UL;
__attribute__((noinline)) static unsigned long down(unsigned long n) {
    if (n == limit) return 0;
    unsigned long r = down(n + 1);
    sink = r;
    return r + n;
}
int main(void) { printf("%lu\n", down(0)); return 0; }
