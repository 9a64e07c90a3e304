/* Fused gather -> GEMM -> scatter-add over kernel-map pairs (float32, CPU, OpenMP).
 *
 * Optional accelerator for i2p.sparse; the pure PyTorch path is the fallback and the test oracle.
 * One source, compiled once per instruction set with explicit flags (never -march=native), the
 * variant chosen at run time from the CPU's features (i2p/sparse/native.py):
 *
 *   -DI2P_ISA_AVX512  -mavx512f -mavx2 -mfma   16 floats per vector, 32 registers
 *   -DI2P_ISA_AVX2    -mavx2 -mfma              8 floats per vector, 16 registers
 *   -DI2P_ISA_NEON    (aarch64 baseline)        4 floats per vector, 32 registers
 *   (none)            generic C                 1 float "vector" (tests the blocking logic)
 *
 * A whole convolution is one call. The output rows are cut into tiles of consecutive rows; each
 * offset's pairs are sorted by output row, so the pairs of (tile, offset) are one contiguous
 * segment (`seg`). A thread takes a tile and runs every offset over it: the tile's output rows
 * stay in cache across the offsets and are written back once, and no two threads ever touch the
 * same output row — no atomics, no barrier between offsets, and a result that does not depend on
 * the schedule. Gathered rows and products stay in registers (TR rows x TQ vectors), so they never
 * make the round trip through memory that index_select / mm / index_add_ make. The backward tiles
 * the input rows the same way (pairs sorted by input row) and computes both gradients in that one
 * pass; the weight gradient is summed per fixed group of tiles (a function of the shapes, not of
 * the threads) and the groups are added in order: bit-identical run to run and for any thread count.
 * Wide layers with few pairs (too few for several groups' partials to pay) get their weight gradient
 * from conv_wgrad instead, split by output columns: each column block summed by one thread.
 * Index arrays are int32 (the Python side refuses maps with 2^31 rows or more).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(I2P_ISA_AVX512)
#include <immintrin.h>
typedef __m512 vf;
#define VL 16
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps((p), (v))
#define VSET1(x) _mm512_set1_ps(x)
#define VZERO() _mm512_setzero_ps()
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c)) /* a * b + c */
#define VADD(a, b) _mm512_add_ps((a), (b))
#define ISA_NAME "avx512"
#define TQ 4 /* vectors per main tile (64 columns): TR * TQ + TQ + 1 <= 32 registers */
#define TR 6
#elif defined(I2P_ISA_AVX2)
#include <immintrin.h>
typedef __m256 vf;
#define VL 8
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define VSET1(x) _mm256_set1_ps(x)
#define VZERO() _mm256_setzero_ps()
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VADD(a, b) _mm256_add_ps((a), (b))
#define ISA_NAME "avx2"
#define TQ 2 /* 16 columns: 6 x 2 accumulators + 2 weights + 1 broadcast = 15 of 16 registers */
#define TR 6
#elif defined(I2P_ISA_NEON)
#include <arm_neon.h>
typedef float32x4_t vf;
#define VL 4
#define VLOAD(p) vld1q_f32(p)
#define VSTORE(p, v) vst1q_f32((p), (v))
#define VSET1(x) vdupq_n_f32(x)
#define VZERO() vdupq_n_f32(0.0f)
#define VFMA(a, b, c) vfmaq_f32((c), (a), (b))
#define VADD(a, b) vaddq_f32((a), (b))
#define ISA_NAME "neon"
#define TQ 4 /* 16 columns: 6 x 4 + 4 + 1 = 29 of 32 registers */
#define TR 6
#else
typedef float vf;
#define VL 1
#define VLOAD(p) (*(p))
#define VSTORE(p, v) (*(p) = (v))
#define VSET1(x) (x)
#define VZERO() 0.0f
#define VFMA(a, b, c) ((a) * (b) + (c))
#define VADD(a, b) ((a) + (b))
#define ISA_NAME "generic"
#define TQ 4
#define TR 4
#endif

#define PF 24 /* prefetch distance in rows (gathers are latency-bound) */
#define WB 32 /* rows per gathered block in the backward pass */

const char *i2p_isa(void) { return ISA_NAME; }
int i2p_vector_width(void) { return VL; }


/* ---------------------------------------------------------------------------------------------
 * register tiles: orow[r][t0 : t0 + VL*Q] += xr[r][0:cin] @ w[0:cin, t0 : t0 + VL*Q] (w row-major,
 * leading dimension ldw) for the rows r < nr; rows nr..RR-1 read valid pointers and are not stored. */
#define DEFINE_TILE(NAME, Q, RR)                                                                  \
    static inline void NAME(const float *const *xr, float *const *orow, int nr, const float *w,  \
                            int64_t cin, int64_t ldw, int64_t t0) {                               \
        vf a[RR][Q];                                                                              \
        for (int r = 0; r < RR; ++r)                                                              \
            for (int q = 0; q < Q; ++q) a[r][q] = VZERO();                                        \
        for (int64_t c = 0; c < cin; ++c) {                                                       \
            const float *wr = w + c * ldw + t0;                                                   \
            vf wv[Q];                                                                             \
            for (int q = 0; q < Q; ++q) wv[q] = VLOAD(wr + VL * q);                               \
            for (int r = 0; r < RR; ++r) {                                                        \
                const vf xv = VSET1(xr[r][c]);                                                    \
                for (int q = 0; q < Q; ++q) a[r][q] = VFMA(xv, wv[q], a[r][q]);                   \
            }                                                                                     \
        }                                                                                         \
        for (int r = 0; r < RR && r < nr; ++r)                                                    \
            for (int q = 0; q < Q; ++q) {                                                         \
                float *o = orow[r] + t0 + VL * q;                                                 \
                VSTORE(o, VADD(VLOAD(o), a[r][q]));                                               \
            }                                                                                     \
    }

DEFINE_TILE(tile_main, TQ, TR)
#if TQ >= 4
DEFINE_TILE(tile_half, 2, TR)
#endif
#if TQ >= 2
DEFINE_TILE(tile_one, 1, TR)
#endif

/* the last < VL columns, scalar */
static inline void tile_scalar(const float *const *xr, float *const *orow, int nr, const float *w,
                               int64_t cin, int64_t ldw, int64_t t0, int64_t tw) {
    float acc[TR][16];
    for (int64_t j0 = 0; j0 < tw; j0 += 16) {
        const int64_t jw = (tw - j0) < 16 ? (tw - j0) : 16;
        memset(acc, 0, sizeof(acc));
        for (int64_t c = 0; c < cin; ++c) {
            const float *wr = w + c * ldw + t0 + j0;
            for (int r = 0; r < nr; ++r) {
                const float xv = xr[r][c];
                for (int64_t j = 0; j < jw; ++j) acc[r][j] += xv * wr[j];
            }
        }
        for (int r = 0; r < nr; ++r)
            for (int64_t j = 0; j < jw; ++j) orow[r][t0 + j0 + j] += acc[r][j];
    }
}

/* orow[r][0:ncol] += xr[r][0:cin] @ w[cin, ncol] for nr <= TR rows */
static inline void rows_gemm_add(const float *const *xr, float *const *orow, int nr, const float *w,
                                 int64_t cin, int64_t ncol) {
    int64_t t0 = 0;
    for (; t0 + TQ * VL <= ncol; t0 += TQ * VL) tile_main(xr, orow, nr, w, cin, ncol, t0);
#if TQ >= 4
    for (; t0 + 2 * VL <= ncol; t0 += 2 * VL) tile_half(xr, orow, nr, w, cin, ncol, t0);
#endif
#if TQ >= 2
    for (; t0 + VL <= ncol; t0 += VL) tile_one(xr, orow, nr, w, cin, ncol, t0);
#endif
    if (t0 < ncol) tile_scalar(xr, orow, nr, w, cin, ncol, t0, ncol - t0);
}

static inline void prefetch_row(const float *p, int64_t n, int write) {
    const char *c = (const char *)p;
    if (write)
        for (int64_t b = 0; b < n * 4; b += 64) __builtin_prefetch(c + b, 1, 3);
    else
        for (int64_t b = 0; b < n * 4; b += 64) __builtin_prefetch(c + b, 0, 3);
}

#define PTR(a, j) ((const int32_t *)(intptr_t)(a)[j])

/* out[o, :] += x[i, :] @ w[wk[j]] over the pairs (i, o) of every offset j < nk.
 * in_ptrs / out_ptrs: addresses of the offsets' int32 index arrays, sorted by output row;
 * seg [nk, ntiles + 1]: where tile t's pairs of offset j start; w: [K, cin, cout]. */
void conv_forward(const float *restrict x, const float *restrict w, float *restrict out,
                  const int64_t *in_ptrs, const int64_t *out_ptrs, const int64_t *seg, const int64_t *wk,
                  int64_t nk, int64_t ntiles, int64_t cin, int64_t cout, int nthreads) {
    if (nthreads < 1) nthreads = 1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (int64_t t = 0; t < ntiles; ++t) {
        for (int64_t j = 0; j < nk; ++j) {
            const int64_t lo = seg[j * (ntiles + 1) + t], hi = seg[j * (ntiles + 1) + t + 1];
            const int32_t *ii = PTR(in_ptrs, j), *oo = PTR(out_ptrs, j);
            const float *wj = w + wk[j] * cin * cout;
            for (int64_t r0 = lo; r0 < hi; r0 += TR) {
                const int nr = (int)((hi - r0) < TR ? (hi - r0) : TR);
                const float *xr[TR];
                float *orow[TR];
                for (int r = 0; r < TR; ++r) {
                    const int64_t rr = r0 + (r < nr ? r : 0);
                    xr[r] = x + (int64_t)ii[rr] * cin;
                    orow[r] = out + (int64_t)oo[rr] * cout;
                }
                if (r0 + PF + TR <= hi)
                    for (int r = 0; r < TR; ++r) prefetch_row(x + (int64_t)ii[r0 + PF + r] * cin, cin, 0);
                rows_gemm_add(xr, orow, nr, wj, cin, cout);
            }
        }
    }
}

/* acc[c0 : c0 + CC, j0 : j0 + VL*Q] += xb[:, c0 : c0 + CC]^T gb[:, j0 : j0 + VL*Q] over nr rows */
#define DEFINE_WTILE(NAME, Q, CC)                                                                 \
    static inline void NAME(float *acc, const float *xb, const float *gb, int64_t nr, int64_t cin, \
                            int64_t cout, int64_t c0, int64_t j0) {                               \
        vf a[CC][Q];                                                                              \
        for (int cc = 0; cc < CC; ++cc)                                                           \
            for (int q = 0; q < Q; ++q) a[cc][q] = VLOAD(acc + (c0 + cc) * cout + j0 + VL * q);   \
        for (int64_t b = 0; b < nr; ++b) {                                                        \
            const float *g = gb + b * cout + j0;                                                  \
            vf gv[Q];                                                                             \
            for (int q = 0; q < Q; ++q) gv[q] = VLOAD(g + VL * q);                                \
            for (int cc = 0; cc < CC; ++cc) {                                                     \
                const vf xv = VSET1(xb[b * cin + c0 + cc]);                                       \
                for (int q = 0; q < Q; ++q) a[cc][q] = VFMA(xv, gv[q], a[cc][q]);                 \
            }                                                                                     \
        }                                                                                         \
        for (int cc = 0; cc < CC; ++cc)                                                           \
            for (int q = 0; q < Q; ++q) VSTORE(acc + (c0 + cc) * cout + j0 + VL * q, a[cc][q]);   \
    }

DEFINE_WTILE(wtile_main, TQ, TR)
DEFINE_WTILE(wtile_main1, TQ, 1)
#if TQ >= 4
DEFINE_WTILE(wtile_half, 2, TR)
DEFINE_WTILE(wtile_half1, 2, 1)
#endif
#if TQ >= 2
DEFINE_WTILE(wtile_one, 1, TR)
DEFINE_WTILE(wtile_one1, 1, 1)
#endif

#define WCOLS(MAIN, ONE, W)                                                                        \
    for (; j0 + (W) <= cout; j0 += (W)) {                                                         \
        int64_t c0 = 0;                                                                           \
        for (; c0 + TR <= cin; c0 += TR) MAIN(acc, xb, gb, nr, cin, cout, c0, j0);                \
        for (; c0 < cin; ++c0) ONE(acc, xb, gb, nr, cin, cout, c0, j0);                           \
    }

/* acc[c, 0:w] (leading dimension lda) += xb[nr, cin]^T gb[nr, w] */
#define DEFINE_WPANEL(NAME, Q, CC)                                                                \
    static inline void NAME(float *acc, const float *xb, const float *gb, int64_t nr, int64_t cin,  \
                            int64_t w, int64_t lda, int64_t c0, int64_t j0) {                       \
        vf a[CC][Q];                                                                              \
        for (int cc = 0; cc < CC; ++cc)                                                           \
            for (int q = 0; q < Q; ++q) a[cc][q] = VLOAD(acc + (c0 + cc) * lda + j0 + VL * q);    \
        for (int64_t b = 0; b < nr; ++b) {                                                        \
            const float *g = gb + b * w + j0;                                                     \
            vf gv[Q];                                                                             \
            for (int q = 0; q < Q; ++q) gv[q] = VLOAD(g + VL * q);                                \
            for (int cc = 0; cc < CC; ++cc) {                                                     \
                const vf xv = VSET1(xb[b * cin + c0 + cc]);                                       \
                for (int q = 0; q < Q; ++q) a[cc][q] = VFMA(xv, gv[q], a[cc][q]);                 \
            }                                                                                     \
        }                                                                                         \
        for (int cc = 0; cc < CC; ++cc)                                                           \
            for (int q = 0; q < Q; ++q) VSTORE(acc + (c0 + cc) * lda + j0 + VL * q, a[cc][q]);    \
    }
DEFINE_WPANEL(wpanel_main, TQ, TR)
DEFINE_WPANEL(wpanel_main1, TQ, 1)
#if TQ >= 2
DEFINE_WPANEL(wpanel_one, 1, TR)
DEFINE_WPANEL(wpanel_one1, 1, 1)
#endif

static inline void wgrad_panel(float *acc, const float *xb, const float *gb, int64_t nr, int64_t cin, int64_t w,
                               int64_t lda) {
    int64_t j0 = 0;
    for (; j0 + TQ * VL <= w; j0 += TQ * VL) {
        int64_t c0 = 0;
        for (; c0 + TR <= cin; c0 += TR) wpanel_main(acc, xb, gb, nr, cin, w, lda, c0, j0);
        for (; c0 < cin; ++c0) wpanel_main1(acc, xb, gb, nr, cin, w, lda, c0, j0);
    }
#if TQ >= 2
    for (; j0 + VL <= w; j0 += VL) {
        int64_t c0 = 0;
        for (; c0 + TR <= cin; c0 += TR) wpanel_one(acc, xb, gb, nr, cin, w, lda, c0, j0);
        for (; c0 < cin; ++c0) wpanel_one1(acc, xb, gb, nr, cin, w, lda, c0, j0);
    }
#endif
    if (j0 < w)
        for (int64_t c = 0; c < cin; ++c) {
            float *a = acc + c * lda;
            for (int64_t b = 0; b < nr; ++b) {
                const float xv = xb[b * cin + c];
                const float *g = gb + b * w;
                for (int64_t j = j0; j < w; ++j) a[j] += xv * g[j];
            }
        }
}

/* acc[cin, cout] += xb[nr, cin]^T gb[nr, cout] */
static inline void wgrad_block(float *acc, const float *xb, const float *gb, int64_t nr, int64_t cin,
                               int64_t cout) {
    int64_t j0 = 0;
    WCOLS(wtile_main, wtile_main1, TQ * VL)
#if TQ >= 4
    WCOLS(wtile_half, wtile_half1, 2 * VL)
#endif
#if TQ >= 2
    WCOLS(wtile_one, wtile_one1, VL)
#endif
    if (j0 < cout)
        for (int64_t c = 0; c < cin; ++c) {
            float *a = acc + c * cout;
            for (int64_t b = 0; b < nr; ++b) {
                const float xv = xb[b * cin + c];
                const float *g = gb + b * cout;
                for (int64_t j = j0; j < cout; ++j) a[j] += xv * g[j];
            }
        }
}

/* Both gradients of conv_forward in one pass over the pairs (rows of go are gathered once):
 *   gx[i, :]  += go[o] @ wt[wk[j]]   (wt = w^T per offset: [K, cout, cin])
 *   gw[wk[j]] += x[i]^T go[o]        (partials per group of tiles in scratch [ngroups, nk, cin, cout],
 *                                     added group after group)
 * Pairs sorted by input row, seg over tiles of input rows. Either output may be NULL. */
void conv_backward(const float *restrict x, const float *restrict go, const float *restrict wt,
                   float *restrict gx, float *restrict gw, const int64_t *in_ptrs, const int64_t *out_ptrs,
                   const int64_t *seg, const int64_t *wk, int64_t nk, int64_t ntiles, int64_t ngroups,
                   int64_t cin, int64_t cout, float *restrict scratch, int nthreads) {
    if (nthreads < 1) nthreads = 1;
    if (ngroups < 1) ngroups = 1;
    const int64_t wsz = cin * cout;
#pragma omp parallel num_threads(nthreads)
    {
        float *xb = gw ? (float *)malloc(sizeof(float) * WB * cin) : NULL;
        float *gb = (float *)malloc(sizeof(float) * WB * cout);
        if (gw) {
#pragma omp for schedule(static)
            for (int64_t e = 0; e < ngroups * nk * wsz; ++e) scratch[e] = 0.0f;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t g = 0; g < ngroups; ++g) {
            const int64_t t_lo = ntiles * g / ngroups, t_hi = ntiles * (g + 1) / ngroups;
            for (int64_t t = t_lo; t < t_hi; ++t)
                for (int64_t j = 0; j < nk; ++j) {
                    const int64_t lo = seg[j * (ntiles + 1) + t], hi = seg[j * (ntiles + 1) + t + 1];
                    if (lo == hi) continue;
                    const int32_t *ii = PTR(in_ptrs, j), *oo = PTR(out_ptrs, j);
                    const float *wtj = wt ? wt + wk[j] * wsz : NULL;
                    float *acc = gw ? scratch + (g * nk + j) * wsz : NULL;
                    for (int64_t r0 = lo; r0 < hi; r0 += WB) {
                        const int64_t nr = (hi - r0) < WB ? (hi - r0) : WB;
                        for (int64_t b = 0; b < nr; ++b) {
                            const int64_t p = r0 + b + PF;
                            if (p < hi) prefetch_row(go + (int64_t)oo[p] * cout, cout, 0);
                            memcpy(gb + b * cout, go + (int64_t)oo[r0 + b] * cout, sizeof(float) * cout);
                            if (gw) memcpy(xb + b * cin, x + (int64_t)ii[r0 + b] * cin, sizeof(float) * cin);
                        }
                        if (gx)
                            for (int64_t s0 = 0; s0 < nr; s0 += TR) {
                                const int ns = (int)((nr - s0) < TR ? (nr - s0) : TR);
                                const float *gr[TR];
                                float *orow[TR];
                                for (int r = 0; r < TR; ++r) {
                                    const int64_t rr = s0 + (r < ns ? r : 0);
                                    gr[r] = gb + rr * cout;
                                    orow[r] = gx + (int64_t)ii[r0 + rr] * cin;
                                }
                                rows_gemm_add(gr, orow, ns, wtj, cout, cin);
                            }
                        if (gw) wgrad_block(acc, xb, gb, nr, cin, cout);
                    }
                }
        }
        if (gw) {
#pragma omp for schedule(static)
            for (int64_t e = 0; e < nk * wsz; ++e) {
                const int64_t j = e / wsz;
                float s = 0.0f;
                for (int64_t g = 0; g < ngroups; ++g) s += scratch[g * nk * wsz + e];
                gw[wk[j] * wsz + (e - j * wsz)] += s;
            }
        }
        free(xb);
        free(gb);
    }
}

/* gw[wk[j]][:, cols] += x[i]^T go[o][:, cols] with each column block of every offset summed by one
 * thread over all the offset's pairs, in order: no partial sums, no scratch, no reduction, and
 * the same bits for any thread count. For wide layers with few pairs (the deep stages), where the
 * per-group partials of conv_backward would cost more memory traffic than the arithmetic.
 * Pairs as conv_backward's (sorted by input row); seg's last column holds each offset's count. */
#define WCB (2 * TQ * VL) /* columns per block */
void conv_wgrad(const float *restrict x, const float *restrict go, float *restrict gw, const int64_t *in_ptrs,
                const int64_t *out_ptrs, const int64_t *seg, const int64_t *wk, int64_t nk, int64_t ntiles,
                int64_t cin, int64_t cout, int nthreads) {
    if (nthreads < 1) nthreads = 1;
    const int64_t nb = (cout + WCB - 1) / WCB;
#pragma omp parallel num_threads(nthreads)
    {
        float *xb = (float *)malloc(sizeof(float) * WB * cin);
        float *gb = (float *)malloc(sizeof(float) * WB * WCB);
#pragma omp for schedule(dynamic, 1) collapse(2)
        for (int64_t j = 0; j < nk; ++j)
            for (int64_t blk = 0; blk < nb; ++blk) {
                const int64_t n = seg[j * (ntiles + 1) + ntiles];
                const int32_t *ii = PTR(in_ptrs, j), *oo = PTR(out_ptrs, j);
                const int64_t j0 = blk * WCB, w = (cout - j0) < WCB ? (cout - j0) : WCB;
                float *acc = gw + wk[j] * cin * cout + j0;
                for (int64_t r0 = 0; r0 < n; r0 += WB) {
                    const int64_t nr = (n - r0) < WB ? (n - r0) : WB;
                    for (int64_t b = 0; b < nr; ++b) {
                        memcpy(xb + b * cin, x + (int64_t)ii[r0 + b] * cin, sizeof(float) * cin);
                        memcpy(gb + b * w, go + (int64_t)oo[r0 + b] * cout + j0, sizeof(float) * w);
                    }
                    wgrad_panel(acc, xb, gb, nr, cin, w, cout); /* acc: leading dimension cout */
                }
            }
        free(xb);
        free(gb);
    }
}
