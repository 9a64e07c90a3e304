/* Fused gather -> GEMM -> scatter-add over kernel-map pairs (float32, CPU, OpenMP).
 *
 * Optional accelerator for i2p.sparse; the pure PyTorch path is the fallback and the test oracle.
 * Within one kernel offset every output row appears at most once, so rows are split across
 * threads without atomics. Gathered rows and products stay in registers (64-column tiles), so
 * they never make the round trip through memory that index_select / mm / index_add_ make.
 * With AVX-512 the 64-wide tiles use intrinsics; otherwise plain loops the compiler vectorises.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_thread_num(void) { return 0; }
#endif

#define R 4   /* rows per register block */
#define TW 64 /* output columns per tile */
#define PF 16 /* prefetch distance in rows */

static inline void tile_generic(const float *const *xr, const float *w, int64_t cin, int64_t cout,
                                int64_t t0, int64_t tw, float acc[R][TW]) {
    memset(acc, 0, sizeof(float) * R * TW);
    for (int64_t c = 0; c < cin; ++c) {
        const float *wr = w + c * cout + t0;
        for (int r = 0; r < R; ++r) {
            const float xv = xr[r][c];
            for (int64_t j = 0; j < tw; ++j) acc[r][j] += xv * wr[j];
        }
    }
}

/* out[o[r], :] += x[i[r], :] @ w    (w: [cin, cout] row-major) */
void pairs_gemm_scatter(const float *restrict x, const float *restrict w, float *restrict out,
                        const int64_t *restrict in_idx, const int64_t *restrict out_idx,
                        int64_t n, int64_t cin, int64_t cout, int nthreads) {
#pragma omp parallel for schedule(dynamic, 16) num_threads(nthreads)
    for (int64_t r0 = 0; r0 < n; r0 += R) {
        const int64_t nr = (n - r0) < R ? (n - r0) : R;
        const float *xr[R];
        float *orow[R];
        for (int r = 0; r < R; ++r) {
            int64_t rr = r < nr ? r : 0;
            xr[r] = x + in_idx[r0 + rr] * cin;
            orow[r] = out + out_idx[r0 + rr] * cout;
        }
        if (r0 + PF + R <= n) { /* prefetch rows a few blocks ahead (gathers are latency-bound) */
            for (int r = 0; r < R; ++r) {
                const char *px = (const char *)(x + in_idx[r0 + PF + r] * cin);
                const char *po = (const char *)(out + out_idx[r0 + PF + r] * cout);
                for (int64_t b = 0; b < cin * 4; b += 64) __builtin_prefetch(px + b, 0, 3);
                for (int64_t b = 0; b < cout * 4; b += 64) __builtin_prefetch(po + b, 1, 3);
            }
        }
        for (int64_t t0 = 0; t0 < cout; t0 += TW) {
            const int64_t tw = (cout - t0) < TW ? (cout - t0) : TW;
#ifdef __AVX512F__
            if (tw == TW) {
                __m512 a[R][4];
                for (int r = 0; r < R; ++r)
                    for (int q = 0; q < 4; ++q) a[r][q] = _mm512_setzero_ps();
                for (int64_t c = 0; c < cin; ++c) {
                    const float *wr = w + c * cout + t0;
                    const __m512 w0 = _mm512_loadu_ps(wr), w1 = _mm512_loadu_ps(wr + 16),
                                 w2 = _mm512_loadu_ps(wr + 32), w3 = _mm512_loadu_ps(wr + 48);
                    for (int r = 0; r < R; ++r) {
                        const __m512 xv = _mm512_set1_ps(xr[r][c]);
                        a[r][0] = _mm512_fmadd_ps(xv, w0, a[r][0]);
                        a[r][1] = _mm512_fmadd_ps(xv, w1, a[r][1]);
                        a[r][2] = _mm512_fmadd_ps(xv, w2, a[r][2]);
                        a[r][3] = _mm512_fmadd_ps(xv, w3, a[r][3]);
                    }
                }
                for (int r = 0; r < nr; ++r)
                    for (int q = 0; q < 4; ++q) {
                        float *o = orow[r] + t0 + 16 * q;
                        _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), a[r][q]));
                    }
                continue;
            }
#endif
            float acc[R][TW];
            tile_generic(xr, w, cin, cout, t0, tw, acc);
            for (int r = 0; r < nr; ++r) {
                float *o = orow[r] + t0;
                for (int64_t j = 0; j < tw; ++j) o[j] += acc[r][j];
            }
        }
    }
}

#define B 64 /* rows per gathered block in the weight gradient */

/* gw[cin, cout] += sum_r x[i[r], :]^T go[o[r], :]. Each thread gathers B rows of x (transposed)
 * and go into local buffers and accumulates into its own partial in `scratch`
 * ([nthreads, cin, cout]); partials are summed into gw at the end. */
void pairs_wgrad(const float *restrict x, const float *restrict go, float *restrict gw,
                 const int64_t *restrict in_idx, const int64_t *restrict out_idx,
                 int64_t n, int64_t cin, int64_t cout, float *restrict scratch, int nthreads) {
    const int64_t wsz = cin * cout;
    memset(scratch, 0, sizeof(float) * wsz * nthreads);
#pragma omp parallel num_threads(nthreads)
    {
        float *acc = scratch + wsz * omp_get_thread_num();
        float (*xt)[B] = malloc(sizeof(float) * cin * B);  /* transposed gathered x block */
        float (*gb)[cout] = malloc(sizeof(float) * B * cout);
#pragma omp for schedule(dynamic, 1)
        for (int64_t r0 = 0; r0 < n; r0 += B) {
            const int64_t nr = (n - r0) < B ? (n - r0) : B;
            for (int64_t b = 0; b < nr; ++b) {
                if (r0 + b + PF < n) {
                    const char *px = (const char *)(x + in_idx[r0 + b + PF] * cin);
                    const char *pg = (const char *)(go + out_idx[r0 + b + PF] * cout);
                    for (int64_t q = 0; q < cin * 4; q += 64) __builtin_prefetch(px + q, 0, 3);
                    for (int64_t q = 0; q < cout * 4; q += 64) __builtin_prefetch(pg + q, 0, 3);
                }
                const float *xs = x + in_idx[r0 + b] * cin;
                for (int64_t c = 0; c < cin; ++c) xt[c][b] = xs[c];
                memcpy(gb[b], go + out_idx[r0 + b] * cout, sizeof(float) * cout);
            }
            int64_t c0 = 0;
#ifdef __AVX512F__
            if (cout % 64 == 0) {
                for (; c0 + 4 <= cin; c0 += 4) {
                    for (int64_t j0 = 0; j0 < cout; j0 += 64) {
                        __m512 a[4][4];
                        for (int cc = 0; cc < 4; ++cc)
                            for (int q = 0; q < 4; ++q) a[cc][q] = _mm512_loadu_ps(acc + (c0 + cc) * cout + j0 + 16 * q);
                        for (int64_t b = 0; b < nr; ++b) {
                            const float *g = gb[b] + j0;
                            const __m512 g0 = _mm512_loadu_ps(g), g1 = _mm512_loadu_ps(g + 16),
                                         g2 = _mm512_loadu_ps(g + 32), g3 = _mm512_loadu_ps(g + 48);
                            for (int cc = 0; cc < 4; ++cc) {
                                const __m512 xv = _mm512_set1_ps(xt[c0 + cc][b]);
                                a[cc][0] = _mm512_fmadd_ps(xv, g0, a[cc][0]);
                                a[cc][1] = _mm512_fmadd_ps(xv, g1, a[cc][1]);
                                a[cc][2] = _mm512_fmadd_ps(xv, g2, a[cc][2]);
                                a[cc][3] = _mm512_fmadd_ps(xv, g3, a[cc][3]);
                            }
                        }
                        for (int cc = 0; cc < 4; ++cc)
                            for (int q = 0; q < 4; ++q) _mm512_storeu_ps(acc + (c0 + cc) * cout + j0 + 16 * q, a[cc][q]);
                    }
                }
            }
#endif
            for (int64_t c = c0; c < cin; ++c) {
                float *a = acc + c * cout;
                for (int64_t b = 0; b < nr; ++b) {
                    const float xv = xt[c][b];
                    const float *g = gb[b];
                    for (int64_t j = 0; j < cout; ++j) a[j] += xv * g[j];
                }
            }
        }
        free(xt);
        free(gb);
    }
    for (int64_t t = 0; t < nthreads; ++t) {
        const float *p = scratch + wsz * t;
        for (int64_t j = 0; j < wsz; ++j) gw[j] += p[j];
    }
}
