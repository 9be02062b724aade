/* render: a Mandelbrot set as a binary PGM (P5) on stdout.
 * argv[1] = width (default 256), argv[2] = height (default 256), argv[3] = max iterations (default 256).
 * Pixel (px, py) samples cx = -2.5 + 3.5 * px / width, cy = -1.25 + 2.5 * py / height;
 * z = z^2 + c from 0 until |z|^2 > 4 or max iterations; grey = iterations * 255 / max. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    long w = argc > 1 ? strtol(argv[1], NULL, 10) : 256;
    long h = argc > 2 ? strtol(argv[2], NULL, 10) : 256;
    long maxit = argc > 3 ? strtol(argv[3], NULL, 10) : 256;
    if (w < 1 || h < 1 || w > 8192 || h > 8192 || maxit < 1) { fprintf(stderr, "bad arguments\n"); return 2; }
    unsigned char *row = malloc((size_t)w);
    if (!row) return 3;
    printf("P5\n%ld %ld\n255\n", w, h);
    for (long py = 0; py < h; py++) {
        double cy = -1.25 + 2.5 * (double)py / (double)h;
        for (long px = 0; px < w; px++) {
            double cx = -2.5 + 3.5 * (double)px / (double)w;
            double x = 0.0, y = 0.0;
            long it = 0;
            while (it < maxit) {
                double x2 = x * x, y2 = y * y;
                if (x2 + y2 > 4.0) break;
                y = 2.0 * x * y + cy;
                x = x2 - y2 + cx;
                it++;
            }
            row[px] = (unsigned char)(it * 255 / maxit);
        }
        fwrite(row, 1, (size_t)w, stdout);
    }
    free(row);
    return 0;
}
