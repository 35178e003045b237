// Exact inner-product top-K on the GPU without faiss or torch (Jetson fallback).
//
// Two launches:
//   topk_partial_*  grid (S, ceil(Q/TQ)), block TB: block (s, qt) scores its
//                   bank segment s against TQ queries with a tiled product
//                   (bank rows staged in shared memory, consecutive threads
//                   reading consecutive dims of a row), and keeps each query's
//                   best K (K <= TK_MAX) of the segment: [Q, S, K] partials.
//   topk_merge      grid (ceil(Q/MERGE_THREADS)): one thread per query merges
//                   its S*K partials into the final K.
// Order: score descending, ties by smaller bank index (what a stable sort of
// the exact scores gives). Missing entries (K > bank size) are index -1.
// Compiled for the device by NVRTC and for the host emulator by g++ (see
// emulator_host.cu); smfa.cu defines ms_half for NVRTC, repeated here so the
// file also compiles alone.

#ifdef __CUDACC_RTC__
#ifndef MS_HALF_DEFINED
#define MS_HALF_DEFINED
typedef unsigned short ms_half;
__device__ __forceinline__ float ms_half2float(ms_half h) {
    float f;
    asm("{ .reg .b16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(f) : "h"(h));
    return f;
}
#endif
#endif

#define TK_MAX 32
#define TQ 32             // queries per block
#define TB 128            // bank rows per tile = threads per block
#define TDK 32            // dims per step
#define MERGE_THREADS 128

__device__ __forceinline__ float tk_load(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float tk_load(const ms_half* p, long long i) { return ms_half2float(p[i]); }

__device__ __forceinline__ bool tk_better(float a, int ai, float b, int bi) {
    return bi < 0 || a > b || (a == b && ai < bi);
}

// Insert (s, i) into the sorted best-K lists if it belongs there.
__device__ __forceinline__ void tk_insert(float* bs, int* bi, int K, float s, int i) {
    if (!(s == s)) return;                           // NaN never ranks
    if (!tk_better(s, i, bs[K - 1], bi[K - 1])) return;
    int pos = K - 1;
    while (pos > 0 && tk_better(s, i, bs[pos - 1], bi[pos - 1])) {
        bs[pos] = bs[pos - 1];
        bi[pos] = bi[pos - 1];
        --pos;
    }
    bs[pos] = s;
    bi[pos] = i;
}

template <typename T>
__device__ __forceinline__ void topk_partial_impl(
    const float* __restrict__ queries, int Q, const T* __restrict__ bank, int Nb, int D,
    int K, int rows_per_seg, float* __restrict__ part_s, int* __restrict__ part_i)
{
    __shared__ __align__(16) float Qs[TDK][TQ + 4];   // k-major: a thread reads its 32 queries as 8 float4
    __shared__ float Bs[TB][TDK + 1];
    __shared__ float S[TQ][TB + 1];
    const int t = threadIdx.x;
    const int seg = blockIdx.x, nseg = gridDim.x;
    const int q0 = blockIdx.y * TQ;
    const int row_begin = seg * rows_per_seg;
    const int row_end = min(Nb, row_begin + rows_per_seg);
    float best_s[TK_MAX];
    int best_i[TK_MAX];
    for (int k = 0; k < TK_MAX; ++k) { best_s[k] = 0.0f; best_i[k] = -1; }

    for (int r0 = row_begin; r0 < row_end; r0 += TB) {
        float acc[TQ];
        for (int q = 0; q < TQ; ++q) acc[q] = 0.0f;
        for (int k0 = 0; k0 < D; k0 += TDK) {
            for (int e = t; e < TQ * TDK; e += TB) {
                const int qq = e / TDK, kk = e % TDK;
                Qs[kk][qq] = (q0 + qq < Q && k0 + kk < D)
                    ? queries[(long long)(q0 + qq) * D + k0 + kk] : 0.0f;
            }
            for (int e = t; e < TB * TDK; e += TB) {
                const int rr = e / TDK, kk = e % TDK;
                Bs[rr][kk] = (r0 + rr < row_end && k0 + kk < D)
                    ? tk_load(bank, (long long)(r0 + rr) * D + k0 + kk) : 0.0f;
            }
            __syncthreads();
            for (int kk = 0; kk < TDK; ++kk) {
                const float b = Bs[t][kk];
                const float4* q4 = reinterpret_cast<const float4*>(&Qs[kk][0]);   // broadcast loads
                for (int v = 0; v < TQ / 4; ++v) {
                    const float4 a = q4[v];
                    acc[4 * v] += a.x * b; acc[4 * v + 1] += a.y * b;
                    acc[4 * v + 2] += a.z * b; acc[4 * v + 3] += a.w * b;
                }
            }
            __syncthreads();
        }
        for (int q = 0; q < TQ; ++q) S[q][t] = acc[q];
        __syncthreads();
        if (t < TQ && q0 + t < Q) {
            const int rows = min(TB, row_end - r0);
            for (int rr = 0; rr < rows; ++rr) tk_insert(best_s, best_i, K, S[t][rr], r0 + rr);
        }
        __syncthreads();
    }
    if (t < TQ && q0 + t < Q) {
        const long long o = ((long long)(q0 + t) * nseg + seg) * K;
        for (int k = 0; k < K; ++k) { part_s[o + k] = best_s[k]; part_i[o + k] = best_i[k]; }
    }
}

extern "C" __global__ void topk_partial_f32(
    const float* __restrict__ queries, int Q, const float* __restrict__ bank, int Nb, int D,
    int K, int rows_per_seg, float* __restrict__ part_s, int* __restrict__ part_i)
{
    topk_partial_impl<float>(queries, Q, bank, Nb, D, K, rows_per_seg, part_s, part_i);
}

extern "C" __global__ void topk_partial_f16(
    const float* __restrict__ queries, int Q, const ms_half* __restrict__ bank, int Nb, int D,
    int K, int rows_per_seg, float* __restrict__ part_s, int* __restrict__ part_i)
{
    topk_partial_impl<ms_half>(queries, Q, bank, Nb, D, K, rows_per_seg, part_s, part_i);
}

extern "C" __global__ void topk_merge(
    const float* __restrict__ part_s, const int* __restrict__ part_i, int Q, int nseg, int K,
    float* __restrict__ out_s, int* __restrict__ out_i)
{
    const int q = blockIdx.x * MERGE_THREADS + threadIdx.x;
    if (q >= Q) return;
    float best_s[TK_MAX];
    int best_i[TK_MAX];
    for (int k = 0; k < TK_MAX; ++k) { best_s[k] = 0.0f; best_i[k] = -1; }
    const long long base = (long long)q * nseg * K;
    for (int e = 0; e < nseg * K; ++e) {
        const int i = part_i[base + e];
        if (i >= 0) tk_insert(best_s, best_i, K, part_s[base + e], i);
    }
    for (int k = 0; k < K; ++k) {
        out_s[(long long)q * K + k] = best_s[k];
        out_i[(long long)q * K + k] = best_i[k];
    }
}
