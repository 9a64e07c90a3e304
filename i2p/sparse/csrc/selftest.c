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

/* an injective map of n pairs from [0, nin) to [0, nout) (n <= nin, nout; 7 and 5 coprime with them) */
static void pairs(int64_t *ii, int64_t *oo, int64_t n, int64_t nin, int64_t nout, int64_t shift) {
    for (int64_t r = 0; r < n; ++r) {
        ii[r] = (r * 7 + shift) % nin;
        oo[r] = (r * 5 + 3 * shift) % nout;
    }
}

static int run_case(int64_t nin, int64_t nout, int64_t cin, int64_t cout, int64_t nk, int64_t n) {
    float *x = malloc(sizeof(float) * nin * cin), *w = malloc(sizeof(float) * nk * cin * cout);
    float *wt = malloc(sizeof(float) * nk * cin * cout), *go = malloc(sizeof(float) * nout * cout);
    float *out = calloc(nout * cout, sizeof(float)), *ref = calloc(nout * cout, sizeof(float));
    float *gx = calloc(nin * cin, sizeof(float)), *gxr = calloc(nin * cin, sizeof(float));
    float *gw = calloc(nk * cin * cout, sizeof(float)), *gwr = calloc(nk * cin * cout, sizeof(float));
    float *scratch = malloc(sizeof(float) * MAX_GROUPS * cin * cout);
    int64_t *ii = malloc(sizeof(int64_t) * nk * n), *oo = malloc(sizeof(int64_t) * nk * n);
    int64_t inp[8], outp[8], counts[8], wk[8];
    for (int64_t i = 0; i < nin * cin; ++i) x[i] = frand();
    for (int64_t i = 0; i < nout * cout; ++i) go[i] = frand();
    for (int64_t i = 0; i < nk * cin * cout; ++i) w[i] = frand();
    for (int64_t k = 0; k < nk; ++k) {
        for (int64_t c = 0; c < cin; ++c)
            for (int64_t j = 0; j < cout; ++j) wt[k * cin * cout + j * cin + c] = w[k * cin * cout + c * cout + j];
        pairs(ii + k * n, oo + k * n, n - k, nin, nout, k);
        inp[k] = (int64_t)(intptr_t)(ii + k * n);
        outp[k] = (int64_t)(intptr_t)(oo + k * n);
        counts[k] = n - k;
        wk[k] = k;
        for (int64_t r = 0; r < n - k; ++r)
            for (int64_t j = 0; j < cout; ++j) {
                float s = 0.0f, g = go[oo[k * n + r] * cout + j];
                for (int64_t c = 0; c < cin; ++c) {
                    s += x[ii[k * n + r] * cin + c] * w[k * cin * cout + c * cout + j];
                    gwr[k * cin * cout + c * cout + j] += x[ii[k * n + r] * cin + c] * g;
                    gxr[ii[k * n + r] * cin + c] += g * w[k * cin * cout + c * cout + j];
                }
                ref[oo[k * n + r] * cout + j] += s;
            }
    }
    conv_forward(x, w, out, inp, outp, counts, wk, nk, cin, cout, 2);
    conv_backward(x, go, wt, gx, gw, inp, outp, counts, wk, nk, cin, cout, scratch, 2);
    double e1 = 0, e2 = 0, e3 = 0;
    for (int64_t i = 0; i < nout * cout; ++i) e1 = fmax(e1, fabs(out[i] - ref[i]));
    for (int64_t i = 0; i < nin * cin; ++i) e2 = fmax(e2, fabs(gx[i] - gxr[i]));
    for (int64_t i = 0; i < nk * cin * cout; ++i) e3 = fmax(e3, fabs(gw[i] - gwr[i]));
    int ok = e1 < 1e-3 && e2 < 1e-3 && e3 < 1e-2;
    printf("%s cin=%ld cout=%ld pairs=%ld: |out| %.2e |gx| %.2e |gw| %.2e\n", ok ? "pass" : "FAIL", (long)cin,
           (long)cout, (long)n, e1, e2, e3);
    free(x), free(w), free(wt), free(go), free(out), free(ref), free(gx), free(gxr), free(gw), free(gwr);
    free(scratch), free(ii), free(oo);
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
