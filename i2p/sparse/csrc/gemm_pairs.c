/* Fused gather -> GEMM -> scatter-add over kernel-map pairs (float32, CPU, OpenMP).
 *
 * Optional accelerator for i2p.sparse; the pure PyTorch path is the fallback and the test oracle.
 * Within one kernel offset every output row appears at most once, so rows are split across
 * threads without atomics. Gathered rows and products stay in registers (AVX-512 tiles of
 * 64, 32 or 16 columns), so they never make the round trip through memory that
 * index_select / mm / index_add_ make. Without AVX-512 only scalar loops remain, and the
 * Python side does not use this library (`has_avx512`).
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

int has_avx512(void) {
#ifdef __AVX512F__
    return 1;
#else
    return 0;
#endif
}

#define R 8   /* rows per block (register blocks of 4 or 8 rows inside) */
#define PF 32 /* prefetch distance in rows */

#ifdef __AVX512F__
/* acc rows r < RR, Q zmm (16·Q columns) from column t0: out[r] += x[r] @ w[:, t0 : t0 + 16Q] */
#define DEFINE_TILE(Q, RR)                                                                        \
    static inline void tile_q##Q##_r##RR(const float *const *xr, float *const *orow, int nr,      \
                                         const float *w, int64_t cin, int64_t cout, int64_t t0) { \
        __m512 a[RR][Q];                                                                          \
        for (int r = 0; r < RR; ++r)                                                              \
            for (int q = 0; q < Q; ++q) a[r][q] = _mm512_setzero_ps();                            \
        for (int64_t c = 0; c < cin; ++c) {                                                       \
            const float *wr = w + c * cout + t0;                                                  \
            __m512 wv[Q];                                                                         \
            for (int q = 0; q < Q; ++q) wv[q] = _mm512_loadu_ps(wr + 16 * q);                     \
            for (int r = 0; r < RR; ++r) {                                                        \
                const __m512 xv = _mm512_set1_ps(xr[r][c]);                                       \
                for (int q = 0; q < Q; ++q) a[r][q] = _mm512_fmadd_ps(xv, wv[q], a[r][q]);       \
            }                                                                                     \
        }                                                                                         \
        for (int r = 0; r < nr && r < RR; ++r)                                                    \
            for (int q = 0; q < Q; ++q) {                                                         \
                float *o = orow[r] + t0 + 16 * q;                                                 \
                _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), a[r][q]));                  \
            }                                                                                     \
    }
DEFINE_TILE(4, 4)
DEFINE_TILE(2, 8)
DEFINE_TILE(1, 8)
#endif

/* scalar tile for the last < 16 columns (or without AVX-512: any width) */
static inline void tile_scalar(const float *const *xr, float *const *orow, int nr, const float *w,
                               int64_t cin, int64_t cout, int64_t t0, int64_t tw) {
    float acc[R][16];
    for (int64_t j0 = 0; j0 < tw; j0 += 16) {
        const int64_t jw = (tw - j0) < 16 ? (tw - j0) : 16;
        memset(acc, 0, sizeof(acc));
        for (int64_t c = 0; c < cin; ++c) {
            const float *wr = w + c * cout + t0 + j0;
            for (int r = 0; r < nr; ++r) {
                const float xv = xr[r][c];
                for (int64_t j = 0; j < jw; ++j) acc[r][j] += xv * wr[j];
            }
        }
        for (int r = 0; r < nr; ++r)
            for (int64_t j = 0; j < jw; ++j) orow[r][t0 + j0 + j] += acc[r][j];
    }
}

/* out[o[r], :] += x[i[r], :] @ w    (w: [cin, cout] row-major) */
void pairs_gemm_scatter(const float *restrict x, const float *restrict w, float *restrict out,
                        const int64_t *restrict in_idx, const int64_t *restrict out_idx,
                        int64_t n, int64_t cin, int64_t cout, int nthreads) {
#pragma omp parallel for schedule(dynamic, 8) num_threads(nthreads)
    for (int64_t r0 = 0; r0 < n; r0 += R) {
        const int nr = (int)((n - r0) < R ? (n - r0) : R);
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
        int64_t t0 = 0;
#ifdef __AVX512F__
        for (; t0 + 64 <= cout; t0 += 64) {
            tile_q4_r4(xr, orow, nr, w, cin, cout, t0);
            if (nr > 4) tile_q4_r4(xr + 4, orow + 4, nr - 4, w, cin, cout, t0);
        }
        for (; t0 + 32 <= cout; t0 += 32) tile_q2_r8(xr, orow, nr, w, cin, cout, t0);
        for (; t0 + 16 <= cout; t0 += 16) tile_q1_r8(xr, orow, nr, w, cin, cout, t0);
#endif
        if (t0 < cout) tile_scalar(xr, orow, nr, w, cin, cout, t0, cout - t0);
    }
}

#define B 32 /* rows per gathered block in the weight gradient */

#ifdef __AVX512F__
/* acc[c0 : c0 + CC, j0 : j0 + 16Q] += xb[:, c0 : c0 + CC]^T gb[:, j0 : j0 + 16Q] over nr rows */
#define DEFINE_WTILE(Q, CC)                                                                       \
    static inline void wtile_q##Q##_c##CC(float *acc, const float *xb, const float *gb, int64_t nr, \
                                          int64_t cin, int64_t cout, int64_t c0, int64_t j0) {     \
        __m512 a[CC][Q];                                                                          \
        for (int cc = 0; cc < CC; ++cc)                                                           \
            for (int q = 0; q < Q; ++q) a[cc][q] = _mm512_loadu_ps(acc + (c0 + cc) * cout + j0 + 16 * q); \
        for (int64_t b = 0; b < nr; ++b) {                                                        \
            const float *g = gb + b * cout + j0;                                                  \
            __m512 gv[Q];                                                                         \
            for (int q = 0; q < Q; ++q) gv[q] = _mm512_loadu_ps(g + 16 * q);                      \
            for (int cc = 0; cc < CC; ++cc) {                                                     \
                const __m512 xv = _mm512_set1_ps(xb[b * cin + c0 + cc]);                          \
                for (int q = 0; q < Q; ++q) a[cc][q] = _mm512_fmadd_ps(xv, gv[q], a[cc][q]);     \
            }                                                                                     \
        }                                                                                         \
        for (int cc = 0; cc < CC; ++cc)                                                           \
            for (int q = 0; q < Q; ++q) _mm512_storeu_ps(acc + (c0 + cc) * cout + j0 + 16 * q, a[cc][q]); \
    }
DEFINE_WTILE(4, 4)
DEFINE_WTILE(2, 8)
DEFINE_WTILE(1, 8)
#endif

/* Both gradients in one pass over the pairs (rows of go are gathered once):
 *   gw[cin, cout] += x[i]^T go[o]      (per-thread partials in scratch, summed at the end)
 *   gx[i, :]      += go[o] @ wt        (wt = w^T: [cout, cin]; no duplicate i within an offset)
 * Either output may be NULL to skip it. */
void pairs_backward(const float *restrict x, const float *restrict go, const float *restrict wt,
                    float *restrict gx, float *restrict gw, const int64_t *restrict in_idx,
                    const int64_t *restrict out_idx, int64_t n, int64_t cin, int64_t cout,
                    float *restrict scratch, int nthreads) {
    const int64_t wsz = cin * cout;
    if (gw) memset(scratch, 0, sizeof(float) * wsz * nthreads);
#pragma omp parallel num_threads(nthreads)
    {
        float *acc = gw ? scratch + wsz * omp_get_thread_num() : NULL;
        float *xb = malloc(sizeof(float) * B * cin);
        float *gb = malloc(sizeof(float) * B * cout);
#pragma omp for schedule(dynamic, 1)
        for (int64_t r0 = 0; r0 < n; r0 += B) {
            const int64_t nr = (n - r0) < B ? (n - r0) : B;
            for (int64_t b = 0; b < nr; ++b) {
                if (r0 + b + PF < n) {
                    const char *pg = (const char *)(go + out_idx[r0 + b + PF] * cout);
                    for (int64_t q = 0; q < cout * 4; q += 64) __builtin_prefetch(pg + q, 0, 3);
                    if (gw) {
                        const char *px = (const char *)(x + in_idx[r0 + b + PF] * cin);
                        for (int64_t q = 0; q < cin * 4; q += 64) __builtin_prefetch(px + q, 0, 3);
                    }
                    if (gx) {
                        const char *po = (const char *)(gx + in_idx[r0 + b + PF] * cin);
                        for (int64_t q = 0; q < cin * 4; q += 64) __builtin_prefetch(po + q, 1, 3);
                    }
                }
                memcpy(gb + b * cout, go + out_idx[r0 + b] * cout, sizeof(float) * cout);
                if (gw) memcpy(xb + b * cin, x + in_idx[r0 + b] * cin, sizeof(float) * cin);
            }
            if (gx) { /* rows of gb times wt, added into gx rows */
                for (int64_t s0 = 0; s0 < nr; s0 += R) {
                    const int ns = (int)((nr - s0) < R ? (nr - s0) : R);
                    const float *gr[R];
                    float *orow[R];
                    for (int r = 0; r < R; ++r) {
                        int64_t rr = s0 + (r < ns ? r : 0);
                        gr[r] = gb + rr * cout;
                        orow[r] = gx + in_idx[r0 + rr] * cin;
                    }
                    int64_t t0 = 0;
#ifdef __AVX512F__
                    for (; t0 + 64 <= cin; t0 += 64) {
                        tile_q4_r4(gr, orow, ns, wt, cout, cin, t0);
                        if (ns > 4) tile_q4_r4(gr + 4, orow + 4, ns - 4, wt, cout, cin, t0);
                    }
                    for (; t0 + 32 <= cin; t0 += 32) tile_q2_r8(gr, orow, ns, wt, cout, cin, t0);
                    for (; t0 + 16 <= cin; t0 += 16) tile_q1_r8(gr, orow, ns, wt, cout, cin, t0);
#endif
                    if (t0 < cin) tile_scalar(gr, orow, ns, wt, cout, cin, t0, cin - t0);
                }
            }
            if (!gw) continue;
            int64_t j0 = 0;
#ifdef __AVX512F__
            for (; j0 + 64 <= cout; j0 += 64) {
                int64_t c0 = 0;
                for (; c0 + 4 <= cin; c0 += 4) wtile_q4_c4(acc, xb, gb, nr, cin, cout, c0, j0);
                for (; c0 < cin; ++c0)
                    for (int64_t b = 0; b < nr; ++b)
                        for (int64_t j = j0; j < j0 + 64; ++j) acc[c0 * cout + j] += xb[b * cin + c0] * gb[b * cout + j];
            }
            for (; j0 + 32 <= cout; j0 += 32) {
                int64_t c0 = 0;
                for (; c0 + 8 <= cin; c0 += 8) wtile_q2_c8(acc, xb, gb, nr, cin, cout, c0, j0);
                for (; c0 < cin; ++c0)
                    for (int64_t b = 0; b < nr; ++b)
                        for (int64_t j = j0; j < j0 + 32; ++j) acc[c0 * cout + j] += xb[b * cin + c0] * gb[b * cout + j];
            }
            for (; j0 + 16 <= cout; j0 += 16) {
                int64_t c0 = 0;
                for (; c0 + 8 <= cin; c0 += 8) wtile_q1_c8(acc, xb, gb, nr, cin, cout, c0, j0);
                for (; c0 < cin; ++c0)
                    for (int64_t b = 0; b < nr; ++b)
                        for (int64_t j = j0; j < j0 + 16; ++j) acc[c0 * cout + j] += xb[b * cin + c0] * gb[b * cout + j];
            }
#endif
            for (int64_t c = 0; c < cin; ++c) {
                float *a = acc + c * cout;
                for (int64_t b = 0; b < nr; ++b) {
                    const float xv = xb[b * cin + c];
                    const float *g = gb + b * cout;
                    for (int64_t j = j0; j < cout; ++j) a[j] += xv * g[j];
                }
            }
        }
        free(xb);
        free(gb);
    }
    if (gw)
        for (int64_t t = 0; t < nthreads; ++t) {
            const float *p = scratch + wsz * t;
            for (int64_t j = 0; j < wsz; ++j) gw[j] += p[j];
        }
}
