// CPU kernels for mobilenet_tf's training step (mobilenet_tf/kernels/__init__.py compiles and
// loads this file, and says when each is used): the gradients of a depthwise convolution (NHWC,
// float32, channel multiplier 1, square 3x3, 5x5 or 7x7 kernel, stride 1 or 2, no dilation), and
// hard-swish with its gradient.
//
// TensorFlow runs oneDNN's kernels for these gradients, and for 5x5 kernels the filter gradient
// takes 4-7x the forward convolution's time. Here both gradients keep a block of 16 (or 8)
// channels in vector registers: the input gradient holds the filter's taps and gathers, for each
// input pixel, the output gradients its taps reached; the filter gradient holds the K*K sums of
// one output row and adds them once per row. -march=native (the machine that compiles is the one
// that runs) lets the compiler use AVX-512 or AVX2 for the vectors.
//
// Hard-swish, x * relu6(x + 3) / 6, is four elementwise ops in TensorFlow (add, relu6, divide,
// multiply) and about five more for its gradient; here it is one pass each way.
#define EIGEN_USE_THREADS
#include <algorithm>
#include <cstring>
#include <vector>
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/shape_inference.h"

using namespace tensorflow;  // NOLINT: TF's own op examples do the same

REGISTER_OP("MobilenetDepthwiseGradInput")
    .Input("grad: float")          // [N, Ho, Wo, C]
    .Input("filter: float")        // [K, K, C, 1]
    .Input("input_shape: int32")   // [4]
    .Attr("stride: int")
    .Attr("pad_top: int")
    .Attr("pad_left: int")
    .Output("output: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle s;
      TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(2, &s));
      c->set_output(0, s);
      return absl::OkStatus();
    });

REGISTER_OP("MobilenetDepthwiseGradFilter")
    .Input("input: float")         // [N, H, W, C]
    .Input("grad: float")          // [N, Ho, Wo, C]
    .Attr("kernel: int")
    .Attr("stride: int")
    .Attr("pad_top: int")
    .Attr("pad_left: int")
    .Output("output: float")       // [K, K, C, 1]
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      int k;
      TF_RETURN_IF_ERROR(c->GetAttr("kernel", &k));
      c->set_output(0, c->MakeShape({k, k, c->Dim(c->input(0), 3), 1}));
      return absl::OkStatus();
    });

REGISTER_OP("MobilenetHardSwish")
    .Input("x: float")
    .Output("y: float")
    .SetShapeFn(shape_inference::UnchangedShape);

REGISTER_OP("MobilenetHardSwishGrad")
    .Input("x: float")
    .Input("grad: float")
    .Output("output: float")
    .SetShapeFn(shape_inference::UnchangedShape);

namespace {

// W floats as one vector (AVX-512 with 16, AVX2 with 8, where -march=native gives them).
template <int W> struct Vec { typedef float type __attribute__((vector_size(4 * W), aligned(4))); };

template <int W> inline typename Vec<W>::type Load(const float* p) {
  return *reinterpret_cast<const typename Vec<W>::type*>(p);
}
template <int W> inline void Store(float* p, typename Vec<W>::type v) {
  *reinterpret_cast<typename Vec<W>::type*>(p) = v;
}

struct Geometry {
  int n, h, w, c, ho, wo, s, pt, pl;
};

// dx for one input row (image b, row ih), channels [c0, c0 + W): the filter taps stay in
// registers, each input pixel gathers the output gradients that its taps reached.
template <int K, int S, int W>
void GradInputRow(const Geometry& d, const float* g, const float* f, float* dx, int b, int ih, int c0) {
  typedef typename Vec<W>::type V;
  V taps[K * K];
  for (int i = 0; i < K * K; ++i) taps[i] = Load<W>(f + (int64_t)i * d.c + c0);
  const float* grows[K];
  for (int kh = 0; kh < K; ++kh) {
    const int t = ih + d.pt - kh;
    grows[kh] = (t >= 0 && t % S == 0 && t / S < d.ho)
                    ? g + ((int64_t)b * d.ho + t / S) * d.wo * d.c + c0 : nullptr;
  }
  float* out = dx + ((int64_t)b * d.h + ih) * d.w * d.c + c0;
  for (int iw = 0; iw < d.w; ++iw) {
    V acc = {};
    for (int kw = 0; kw < K; ++kw) {
      const int t = iw + d.pl - kw;
      if (t < 0 || t % S || t / S >= d.wo) continue;
      const int64_t off = (int64_t)(t / S) * d.c;
      for (int kh = 0; kh < K; ++kh)
        if (grows[kh]) acc += Load<W>(grows[kh] + off) * taps[kh * K + kw];
    }
    Store<W>(out + (int64_t)iw * d.c, acc);
  }
}

// The filter gradient of one output row (image b, row oh), channels [c0, c0 + W), added to
// `acc` ([K, K, C]): K*K accumulators stay in registers over the row.
template <int K, int W>
void GradFilterRow(const Geometry& d, const float* x, const float* g, float* acc, int b, int oh, int c0) {
  typedef typename Vec<W>::type V;
  V sum[K * K] = {};
  const float* xrows[K];
  for (int kh = 0; kh < K; ++kh) {
    const int ih = oh * d.s + kh - d.pt;
    xrows[kh] = (ih >= 0 && ih < d.h) ? x + ((int64_t)b * d.h + ih) * d.w * d.c + c0 : nullptr;
  }
  const float* grow = g + ((int64_t)b * d.ho + oh) * d.wo * d.c + c0;
  for (int ow = 0; ow < d.wo; ++ow) {
    const V gv = Load<W>(grow + (int64_t)ow * d.c);
    const int iw0 = ow * d.s - d.pl;
    if (iw0 >= 0 && iw0 + K <= d.w) {
      for (int kh = 0; kh < K; ++kh) {
        if (!xrows[kh]) continue;
        const float* xp = xrows[kh] + (int64_t)iw0 * d.c;
        for (int kw = 0; kw < K; ++kw) sum[kh * K + kw] += Load<W>(xp + (int64_t)kw * d.c) * gv;
      }
    } else {
      for (int kh = 0; kh < K; ++kh) {
        if (!xrows[kh]) continue;
        for (int kw = 0; kw < K; ++kw) {
          const int iw = iw0 + kw;
          if (iw < 0 || iw >= d.w) continue;
          sum[kh * K + kw] += Load<W>(xrows[kh] + (int64_t)iw * d.c) * gv;
        }
      }
    }
  }
  for (int i = 0; i < K * K; ++i) {
    float* a = acc + (int64_t)i * d.c + c0;
    Store<W>(a, Load<W>(a) + sum[i]);
  }
}

// Runs `Fn<K, W>::Run` over the channels in blocks of W = 16, then 8, then 1.
template <int K, template <int, int> class Fn, typename... Args>
void OverChannels(const Geometry& d, Args... args) {
  int c0 = 0;
  for (; c0 + 16 <= d.c; c0 += 16) Fn<K, 16>::Run(d, args..., c0);
  for (; c0 + 8 <= d.c; c0 += 8) Fn<K, 8>::Run(d, args..., c0);
  for (; c0 < d.c; ++c0) Fn<K, 1>::Run(d, args..., c0);
}
template <int K, int W> struct GradInputFn {
  static void Run(const Geometry& d, const float* g, const float* f, float* dx, int b, int r, int c0) {
    if (d.s == 1) GradInputRow<K, 1, W>(d, g, f, dx, b, r, c0);
    else GradInputRow<K, 2, W>(d, g, f, dx, b, r, c0);
  }
};
template <int K, int W> struct GradFilterFn {
  static void Run(const Geometry& d, const float* x, const float* g, float* acc, int b, int r, int c0) {
    GradFilterRow<K, W>(d, x, g, acc, b, r, c0);
  }
};

template <template <int, int> class Fn, typename... Args>
bool Dispatch(int k, const Geometry& d, Args... args) {
  switch (k) {
    case 3: OverChannels<3, Fn>(d, args...); return true;
    case 5: OverChannels<5, Fn>(d, args...); return true;
    case 7: OverChannels<7, Fn>(d, args...); return true;
  }
  return false;
}

// The attributes both gradient kernels share.
class DepthwiseGradOp : public OpKernel {
 public:
  explicit DepthwiseGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("stride", &stride_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pad_top", &pad_top_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pad_left", &pad_left_));
    OP_REQUIRES(ctx, stride_ == 1 || stride_ == 2, errors::InvalidArgument("stride 1 or 2"));
  }
 protected:
  int stride_, pad_top_, pad_left_;
};

class GradInputOp : public DepthwiseGradOp {
 public:
  using DepthwiseGradOp::DepthwiseGradOp;
  void Compute(OpKernelContext* ctx) override {
    const Tensor& grad = ctx->input(0);
    const Tensor& filter = ctx->input(1);
    auto shape_vec = ctx->input(2).vec<int32>();
    TensorShape in_shape({shape_vec(0), shape_vec(1), shape_vec(2), shape_vec(3)});
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, in_shape, &out));
    const int k = filter.dim_size(0);
    OP_REQUIRES(ctx, k == 3 || k == 5 || k == 7, errors::InvalidArgument("kernel 3, 5 or 7"));
    const Geometry d{(int)in_shape.dim_size(0), (int)in_shape.dim_size(1), (int)in_shape.dim_size(2),
                     (int)in_shape.dim_size(3), (int)grad.dim_size(1), (int)grad.dim_size(2),
                     stride_, pad_top_, pad_left_};
    const float* g = grad.flat<float>().data();
    const float* f = filter.flat<float>().data();
    float* dx = out->flat<float>().data();
    auto work = [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row)
        Dispatch<GradInputFn>(k, d, g, f, dx, (int)(row / d.h), (int)(row % d.h));
    };
    auto pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    pool->ParallelFor((int64_t)d.n * d.h, (int64_t)d.w * d.c * k * k / (d.s * d.s), work);
  }
};

class GradFilterOp : public DepthwiseGradOp {
 public:
  explicit GradFilterOp(OpKernelConstruction* ctx) : DepthwiseGradOp(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("kernel", &k_));
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& input = ctx->input(0);
    const Tensor& grad = ctx->input(1);
    const int k = k_;
    OP_REQUIRES(ctx, k == 3 || k == 5 || k == 7, errors::InvalidArgument("kernel 3, 5 or 7"));
    const Geometry d{(int)input.dim_size(0), (int)input.dim_size(1), (int)input.dim_size(2),
                     (int)input.dim_size(3), (int)grad.dim_size(1), (int)grad.dim_size(2),
                     stride_, pad_top_, pad_left_};
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({k, k, d.c, 1}), &out));
    const float* x = input.flat<float>().data();
    const float* g = grad.flat<float>().data();
    auto pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    const int64_t rows = (int64_t)d.n * d.ho;
    const int shards = (int)std::max<int64_t>(1, std::min<int64_t>(pool->NumThreads(), rows));
    const int64_t kkc = (int64_t)k * k * d.c;
    std::vector<float> acc(shards * kkc, 0.f);
    auto work = [&](int64_t begin, int64_t end) {
      for (int64_t sh = begin; sh < end; ++sh)
        for (int64_t row = rows * sh / shards; row < rows * (sh + 1) / shards; ++row)
          Dispatch<GradFilterFn>(k, d, x, g, acc.data() + sh * kkc, (int)(row / d.ho), (int)(row % d.ho));
    };
    pool->ParallelFor(shards, rows * d.wo * kkc / shards, work);
    float* df = out->flat<float>().data();
    std::memcpy(df, acc.data(), sizeof(float) * kkc);
    for (int sh = 1; sh < shards; ++sh)
      for (int64_t i = 0; i < kkc; ++i) df[i] += acc[sh * kkc + i];
  }
 private:
  int k_;
};

// Runs fn(x, g, out, begin, end) over the elements of `out` (shaped like input 0), in blocks,
// on TensorFlow's threads; `out` may reuse the buffer of input `reuse`.
template <typename Fn>
void Elementwise(OpKernelContext* ctx, int reuse, Fn fn) {
  const Tensor& x = ctx->input(0);
  Tensor* out = nullptr;
  OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({reuse}, 0, x.shape(), &out));
  const float* g = ctx->num_inputs() > 1 ? ctx->input(1).flat<float>().data() : nullptr;
  const float* xp = x.flat<float>().data();
  float* o = out->flat<float>().data();
  const int64_t size = x.NumElements(), block = 16384;
  auto pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  pool->ParallelFor((size + block - 1) / block, block * 4, [&](int64_t begin, int64_t end) {
    fn(xp, g, o, begin * block, std::min(size, end * block));
  });
}

class HardSwishOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    Elementwise(ctx, 0, [](const float* x, const float*, float* y, int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) y[i] = x[i] * (std::min(std::max(x[i] + 3.f, 0.f), 6.f) / 6.f);
    });
  }
};

// d/dx of x * relu6(x + 3) / 6 as TensorFlow's gradient gives it: relu6's gradient is 0 at both
// ends of its ramp, so 0 up to -3, 1 from 3, (2x + 3) / 6 between.
class HardSwishGradOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    Elementwise(ctx, 1, [](const float* x, const float* g, float* dx, int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float slope = x[i] <= -3.f ? 0.f : x[i] >= 3.f ? 1.f : (2.f * x[i] + 3.f) / 6.f;
        dx[i] = g[i] * slope;
      }
    });
  }
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("MobilenetDepthwiseGradInput").Device(DEVICE_CPU).HostMemory("input_shape"), GradInputOp);
REGISTER_KERNEL_BUILDER(Name("MobilenetDepthwiseGradFilter").Device(DEVICE_CPU), GradFilterOp);
REGISTER_KERNEL_BUILDER(Name("MobilenetHardSwish").Device(DEVICE_CPU), HardSwishOp);
REGISTER_KERNEL_BUILDER(Name("MobilenetHardSwishGrad").Device(DEVICE_CPU), HardSwishGradOp);
