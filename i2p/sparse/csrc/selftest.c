/* Stand-alone check of gemm_pairs.c against naive loops, for variants Python cannot load here
 * (e.g. NEON cross-compiled and run under qemu-aarch64). Build with the variant's flags:
 *
 *   aarch64-linux-gnu-gcc -O2 -fopenmp -DI2P_ISA_NEON selftest.c -o selftest -lm && qemu-aarch64 ./selftest
 *
 * Prints the ISA, one line per case and "ok"; exits 1 on a mismatch.
 */
#include <math.h>
#include <stdio.h>

#include "gemm_pairs.c"

static unsigned long long rng = 88172645463325252ULL;
static float frand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

#define T_ROWS 64 /* small tiles here, so every case spans several tiles and groups */

/* sort the pairs of one offset by key (ii if by_in, else oo), insertion sort */
static void sort_pairs(int32_t *ii, int32_t *oo, int64_t n, int by_in) {
    for (int64_t a = 1; a < n; ++a) {
        int32_t ki = ii[a], ko = oo[a];
        int64_t b = a - 1;
        while (b >= 0 && (by_in ? ii[b] > ki : oo[b] > ko)) {
            ii[b + 1] = ii[b];
            oo[b + 1] = oo[b];
            --b;
        }
        ii[b + 1] = ki;
        oo[b + 1] = ko;
    }
}

/* seg[j, t] = first pair of offset j whose key row is >= t * T_ROWS */
static void segments(const int32_t *key, int64_t n, int64_t ntiles, int64_t *seg) {
    int64_t p = 0;
    for (int64_t t = 0; t <= ntiles; ++t) {
        while (p < n && key[p] < t * T_ROWS) ++p;
        seg[t] = p;
    }
}

static int run_case(int64_t nin, int64_t nout, int64_t cin, int64_t cout, int64_t nk, int64_t n) {
    float *x = malloc(sizeof(float) * nin * cin), *w = malloc(sizeof(float) * nk * cin * cout);
    float *wt = malloc(sizeof(float) * nk * cin * cout), *go = malloc(sizeof(float) * nout * cout);
    float *out = calloc(nout * cout, sizeof(float)), *ref = calloc(nout * cout, sizeof(float));
    float *gx = calloc(nin * cin, sizeof(float)), *gxr = calloc(nin * cin, sizeof(float));
    float *gw = calloc(nk * cin * cout, sizeof(float)), *gwr = calloc(nk * cin * cout, sizeof(float));
    const int64_t ngroups = 3, nt_out = (nout + T_ROWS - 1) / T_ROWS, nt_in = (nin + T_ROWS - 1) / T_ROWS;
    float *scratch = malloc(sizeof(float) * ngroups * nk * cin * cout);
    int32_t *fi = malloc(sizeof(int32_t) * nk * n), *fo = malloc(sizeof(int32_t) * nk * n);
    int32_t *bi = malloc(sizeof(int32_t) * nk * n), *bo = malloc(sizeof(int32_t) * nk * n);
    int64_t *fseg = malloc(sizeof(int64_t) * nk * (nt_out + 1)), *bseg = malloc(sizeof(int64_t) * nk * (nt_in + 1));
    int64_t fin[8], fout[8], bin[8], bout[8], wk[8];
    for (int64_t i = 0; i < nin * cin; ++i) x[i] = frand();
    for (int64_t i = 0; i < nout * cout; ++i) go[i] = frand();
    for (int64_t i = 0; i < nk * cin * cout; ++i) w[i] = frand();
    for (int64_t k = 0; k < nk; ++k) {
        const int64_t m = n - k;
        int32_t *ii = fi + k * n, *oo = fo + k * n;
        for (int64_t c = 0; c < cin; ++c)
            for (int64_t j = 0; j < cout; ++j) wt[k * cin * cout + j * cin + c] = w[k * cin * cout + c * cout + j];
        for (int64_t r = 0; r < m; ++r) { /* injective: m <= nin, nout; 7 and 5 coprime with them */
            ii[r] = (int32_t)((r * 7 + k) % nin);
            oo[r] = (int32_t)((r * 5 + 3 * k) % nout);
        }
        for (int64_t r = 0; r < m; ++r)
            for (int64_t j = 0; j < cout; ++j) {
                float s = 0.0f, g = go[oo[r] * cout + j];
                for (int64_t c = 0; c < cin; ++c) {
                    s += x[ii[r] * cin + c] * w[k * cin * cout + c * cout + j];
                    gwr[k * cin * cout + c * cout + j] += x[ii[r] * cin + c] * g;
                    gxr[ii[r] * cin + c] += g * w[k * cin * cout + c * cout + j];
                }
                ref[oo[r] * cout + j] += s;
            }
        memcpy(bi + k * n, ii, sizeof(int32_t) * m);
        memcpy(bo + k * n, oo, sizeof(int32_t) * m);
        sort_pairs(ii, oo, m, 0);
        sort_pairs(bi + k * n, bo + k * n, m, 1);
        segments(oo, m, nt_out, fseg + k * (nt_out + 1));
        segments(bi + k * n, m, nt_in, bseg + k * (nt_in + 1));
        fin[k] = (int64_t)(intptr_t)ii;
        fout[k] = (int64_t)(intptr_t)oo;
        bin[k] = (int64_t)(intptr_t)(bi + k * n);
        bout[k] = (int64_t)(intptr_t)(bo + k * n);
        wk[k] = k;
    }
    conv_forward(x, w, out, fin, fout, fseg, wk, nk, nt_out, cin, cout, 2);
    conv_backward(x, go, wt, gx, gw, bin, bout, bseg, wk, nk, nt_in, ngroups, cin, cout, scratch, 2);
    float *gw2 = calloc(nk * cin * cout, sizeof(float)); /* the column-split weight gradient */
    conv_wgrad(x, go, gw2, bin, bout, bseg, wk, nk, nt_in, cin, cout, 2);
    double e1 = 0, e2 = 0, e3 = 0, e4 = 0;
    for (int64_t i = 0; i < nout * cout; ++i) e1 = fmax(e1, fabs(out[i] - ref[i]));
    for (int64_t i = 0; i < nin * cin; ++i) e2 = fmax(e2, fabs(gx[i] - gxr[i]));
    for (int64_t i = 0; i < nk * cin * cout; ++i) e3 = fmax(e3, fabs(gw[i] - gwr[i]));
    for (int64_t i = 0; i < nk * cin * cout; ++i) e4 = fmax(e4, fabs(gw2[i] - gwr[i]));
    free(gw2);
    int ok = e1 < 1e-3 && e2 < 1e-3 && e3 < 1e-2 && e4 < 1e-2;
    printf("%s cin=%ld cout=%ld pairs=%ld: |out| %.2e |gx| %.2e |gw| %.2e |gw cols| %.2e\n", ok ? "pass" : "FAIL",
           (long)cin, (long)cout, (long)n, e1, e2, e3, e4);
    free(x), free(w), free(wt), free(go), free(out), free(ref), free(gx), free(gxr), free(gw), free(gwr);
    free(scratch), free(fi), free(fo), free(bi), free(bo), free(fseg), free(bseg);
    return ok;
}

int main(void) {
    printf("isa %s, vector width %d\n", i2p_isa(), i2p_vector_width());
    int ok = 1;
    ok &= run_case(300, 281, 64, 64, 3, 250);
    ok &= run_case(300, 281, 5, 70, 2, 211);
    ok &= run_case(500, 401, 33, 128, 4, 390);
    ok &= run_case(2000, 2101, 16, 3, 2, 1999); /* > GROUP_ROWS: several groups */
    printf(ok ? "ok\n" : "FAILED\n");
    return ok ? 0 : 1;
}
