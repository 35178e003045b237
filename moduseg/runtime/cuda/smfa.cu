// SMFA on the GPU: area-overlap mask->patch weights, weighted pooling, L2 norm.
//
// Two launches, both reading the same definition as moduseg/smfa.py:
//   smfa_weights  grid (P), block SMFA_THREADS: one block per mask. Thread k
//                 owns patch cell k: W[p,k] = sum_i ay(i) * sum_j ax(j) M[p,i,j]
//                 over the source pixels overlapping the cell, computed from
//                 integer pixel/cell bounds (exact ranges, no tables), stored
//                 cell-major [N, P] so the pooling launch stages it coalesced. Also the
//                 mask's pixel count (exact, uint32) and weight sum (block reductions).
//   smfa_pool_*   grid (ceil(D/DT), ceil(P/PT)), block POOL_THREADS: a tiled
//                 [P,N]x[N,D] product with feature tiles staged in shared memory
//                 (consecutive threads read consecutive addresses along whichever
//                 axis of the feature buffer is contiguous), the division by the
//                 weight sum, and the L2 normalisation: each block adds its
//                 squared partial norms atomically; the last block of a mask tile
//                 to finish (ticket counter) rescales that tile's rows.
//
// The same file is compiled by NVRTC for the device and by g++ for the host
// emulator (emulator_host.cu supplies the CUDA built-ins), so the indexing and
// arithmetic checked on the CPU are exactly what runs on the GPU.

#ifdef __CUDACC_RTC__
typedef unsigned short ms_half;
__device__ __forceinline__ float ms_half2float(ms_half h) {
    float f;
    asm("{ .reg .b16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(f) : "h"(h));
    return f;
}
#endif

#define SMFA_THREADS 256
#define PT 32            // masks per pooling tile
#define DT 64            // feature dims per pooling tile
#define NK 32            // grid cells per pooling step
#define POOL_THREADS 256 // = DT * (PT / 8): each thread owns 8 masks x 1 dim

__device__ __forceinline__ float ms_load(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float ms_load(const ms_half* p, long long i) { return ms_half2float(p[i]); }

// Fraction of cell [c*patch, (c+1)*patch) covered by source pixel i, whose
// extent is [i, i+1) * content / n in padded-input pixels (n source pixels).
// Scaled by n the bounds are integers, so the overlap is exact up to one
// final rounding.
__device__ __forceinline__ float ms_overlap(int i, int n, int content, int c, int patch) {
    const long long lo = max((long long)i * content, (long long)c * patch * n);
    const long long hi = min((long long)(i + 1) * content, (long long)(c + 1) * patch * n);
    return hi > lo ? (float)(hi - lo) / (float)((long long)n * patch) : 0.0f;
}

extern "C" __global__ void smfa_weights(
    const unsigned char* __restrict__ masks, int P, int Hm, int Wm,
    int rh, int rw, int gh, int gw, int patch,
    float* __restrict__ weights, float* __restrict__ wsum, unsigned int* __restrict__ area,
    float* __restrict__ norm2, unsigned int* __restrict__ counters)
{
    __shared__ float red_w[SMFA_THREADS];
    __shared__ unsigned int red_a[SMFA_THREADS];
    const int p = blockIdx.x;
    const int t = threadIdx.x;
    const int N = gh * gw;
    const unsigned char* m = masks + (long long)p * Hm * Wm;
    float sum_w = 0.0f;
    unsigned int sum_a = 0;
    for (int k = t; k < N; k += SMFA_THREADS) {
        const int cy = k / gw, cx = k - (k / gw) * gw;
        // Source rows/cols overlapping the cell: pixel i spans [i*rh/Hm, (i+1)*rh/Hm).
        const int i0 = (cy * patch * Hm) / rh;
        const int i1 = min(Hm, ((cy + 1) * patch * Hm + rh - 1) / rh);
        const int j0 = (cx * patch * Wm) / rw;
        const int j1 = min(Wm, ((cx + 1) * patch * Wm + rw - 1) / rw);
        // Only the first and last source columns of a cell are partly inside
        // it; the ones between are whole pixels with the same overlap, so a
        // row costs one byte test and an integer add per pixel.
        float acc = 0.0f;
        unsigned int count = 0;
        if (j0 < j1) {
            const float ax0 = ms_overlap(j0, Wm, rw, cx, patch);
            const float axl = (j1 - 1 > j0) ? ms_overlap(j1 - 1, Wm, rw, cx, patch) : 0.0f;
            const float full = (float)rw / (float)((long long)Wm * patch);
            const bool own0 = (j0 * rw) / (Wm * patch) == cx;   // pixel j0 starts in this cell
            for (int i = i0; i < i1; ++i) {
                const unsigned char* row = m + (long long)i * Wm;
                const unsigned int first = row[j0] != 0;
                const unsigned int last = (j1 - 1 > j0) ? (row[j1 - 1] != 0) : 0u;
                unsigned int inner = 0;
                for (int j = j0 + 1; j < j1 - 1; ++j) inner += row[j] != 0;
                acc += ms_overlap(i, Hm, rh, cy, patch)
                       * ((float)first * ax0 + (float)last * axl + (float)inner * full);
                if ((i * rh) / (Hm * patch) == cy)                // pixel row starts in this cell
                    count += inner + last + (own0 ? first : 0u);
            }
        }
        weights[(long long)k * P + p] = acc;                // cell-major [N, P]
        sum_w += acc;
        sum_a += count;
    }
    red_w[t] = sum_w;
    red_a[t] = sum_a;
    __syncthreads();
    for (int s = SMFA_THREADS / 2; s > 0; s >>= 1) {
        if (t < s) {
            red_w[t] += red_w[t + s];
            red_a[t] += red_a[t + s];
        }
        __syncthreads();
    }
    if (t == 0) {
        wsum[p] = red_w[0];
        area[p] = red_a[0];
        norm2[p] = 0.0f;                       // zeroed here for the pooling launch
        if (p % PT == 0) counters[p / PT] = 0u;
    }
}

template <typename T>
__device__ __forceinline__ void smfa_pool_impl(
    const float* __restrict__ weights, const float* __restrict__ wsum,
    const T* __restrict__ feat, long long stride_d, long long stride_n,
    int P, int D, int N, float eps,
    float* out, float* norm2, unsigned int* counters)
{
    __shared__ __align__(16) float Ws[NK][PT];   // rows of 8 masks read as two float4
    __shared__ float Fs[DT][NK + 1];
    __shared__ float Sq[PT][DT + 1];
    __shared__ unsigned int is_last;
    const int t = threadIdx.x;
    const int d0 = blockIdx.x * DT, p0 = blockIdx.y * PT;
    const int dd = t % DT, pg = (t / DT) * 8;
    const bool n_major = (stride_n == 1);      // features [D, N]: walk n fastest
    float acc[8];
    for (int r = 0; r < 8; ++r) acc[r] = 0.0f;

    for (int n0 = 0; n0 < N; n0 += NK) {
        for (int e = t; e < PT * NK; e += POOL_THREADS) {     // consecutive threads: consecutive masks
            const int kk = e / PT, pp = e % PT;
            const int p = p0 + pp, n = n0 + kk;
            Ws[kk][pp] = (p < P && n < N) ? weights[(long long)n * P + p] : 0.0f;
        }
        for (int e = t; e < DT * NK; e += POOL_THREADS) {
            int di, kk;
            if (n_major) { di = e / NK; kk = e % NK; } else { kk = e / DT; di = e % DT; }
            const int d = d0 + di, n = n0 + kk;
            Fs[di][kk] = (d < D && n < N) ? ms_load(feat, d * stride_d + n * stride_n) : 0.0f;
        }
        __syncthreads();
        for (int kk = 0; kk < NK; ++kk) {
            const float f = Fs[dd][kk];
            const float4 wa = *reinterpret_cast<const float4*>(&Ws[kk][pg]);     // broadcast loads
            const float4 wb = *reinterpret_cast<const float4*>(&Ws[kk][pg + 4]);
            acc[0] += wa.x * f; acc[1] += wa.y * f; acc[2] += wa.z * f; acc[3] += wa.w * f;
            acc[4] += wb.x * f; acc[5] += wb.y * f; acc[6] += wb.z * f; acc[7] += wb.w * f;
        }
        __syncthreads();
    }

    const int d = d0 + dd;
    for (int r = 0; r < 8; ++r) {
        const int p = p0 + pg + r;
        float v = 0.0f;
        if (p < P && d < D) {
            v = acc[r] / (wsum[p] + eps);
            out[(long long)p * D + d] = v;
        }
        Sq[pg + r][dd] = v * v;
    }
    __syncthreads();
    if (t < PT && p0 + t < P) {
        float s = 0.0f;
        for (int k = 0; k < DT; ++k) s += Sq[t][k];
        atomicAdd(&norm2[p0 + t], s);
    }
    __threadfence();
    __syncthreads();
    if (t == 0) is_last = (atomicAdd(&counters[blockIdx.y], 1u) == gridDim.x - 1) ? 1u : 0u;
    __syncthreads();
    if (is_last) {
        volatile float* vout = out;
        volatile float* vn = norm2;
        const int rows = min(PT, P - p0);
        for (int e = t; e < rows * D; e += POOL_THREADS) {
            const int p = p0 + e / D;
            const long long o = (long long)p * D + e % D;
            vout[o] = vout[o] / fmaxf(sqrtf(vn[p]), 1e-12f);
        }
    }
}

extern "C" __global__ void smfa_pool_f32(
    const float* __restrict__ weights, const float* __restrict__ wsum,
    const float* __restrict__ feat, long long stride_d, long long stride_n,
    int P, int D, int N, float eps, float* out, float* norm2, unsigned int* counters)
{
    smfa_pool_impl<float>(weights, wsum, feat, stride_d, stride_n, P, D, N, eps, out, norm2, counters);
}

extern "C" __global__ void smfa_pool_f16(
    const float* __restrict__ weights, const float* __restrict__ wsum,
    const ms_half* __restrict__ feat, long long stride_d, long long stride_n,
    int P, int D, int N, float eps, float* out, float* norm2, unsigned int* counters)
{
    smfa_pool_impl<ms_half>(weights, wsum, feat, stride_d, stride_n, P, D, N, eps, out, norm2, counters);
}
