//! CPU kernels for the layers candle's stock ops run slowly, wrapped as candle custom ops.
//!
//! candle's `conv2d` with `groups = C` runs `C` separate convolutions, which makes the
//! depthwise layers of this network dominate a frame. [`DepthwiseConv`] is one pass per
//! channel instead, with bias, activation and residual fused in; [`PointwiseConv`] is a 1x1
//! convolution as one matrix product with the same epilogue; [`DenseConv`] is the stem,
//! [`Upsample2x`] the decoder's upsampling, [`GatedAdd`] its gated skip connection and
//! [`TransposedConv2x2Sigmoid`] the output layer.
//!
//! Every hot loop runs under [`simd`], so one binary uses AVX2 where the CPU has it.
//!
//! All kernels take batch size 1 and contiguous NCHW `f32` tensors, which is what the model
//! feeds them; anything else is an error, never a panic.

use crate::simd::simd;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, InplaceOp2, Layout, Result, Shape};

/// Element-wise activation fused into a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Identity (the linear projections of inverted-residual blocks).
    None,
    /// `max(x, 0)`.
    Relu,
    /// `x * relu6(x + 3) / 6` (Howard et al., "Searching for MobileNetV3", 2019, eq. 2;
    /// TFLite `HARD_SWISH`).
    HardSwish,
    /// `1 / (1 + exp(-x))` (TFLite `LOGISTIC`).
    Sigmoid,
}

impl Activation {
    /// Applies the activation to one value.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Relu => x.max(0.0),
            Activation::HardSwish => x * (x + 3.0).clamp(0.0, 6.0) * (1.0 / 6.0),
            Activation::Sigmoid if -x > SIGMOID_ZERO_ABOVE => 0.0,
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        }
    }

    /// Applies the activation to every value of `v` after adding `bias` (the match is outside
    /// the loop, so each arm vectorises).
    #[inline(always)]
    pub fn apply_slice(self, v: &mut [f32], bias: f32) {
        match self {
            Activation::None => v.iter_mut().for_each(|x| *x += bias),
            Activation::Relu => v.iter_mut().for_each(|x| *x = (*x + bias).max(0.0)),
            Activation::HardSwish => v.iter_mut().for_each(|x| {
                let y = *x + bias;
                *x = y * (y + 3.0).clamp(0.0, 6.0) * (1.0 / 6.0);
            }),
            Activation::Sigmoid => {
                // A plain loop (not `for_each`), so it is compiled with the caller's `simd`
                // instruction set (the rounding in `exp_poly` is one instruction there).
                for x in v.iter_mut() {
                    let z = -(*x + bias);
                    // e^z at most e^SIGMOID_ZERO_ABOVE, so that the division never gives a
                    // subnormal; beyond it the answer is 0 (see the constant).
                    let s = 1.0 / (1.0 + exp_poly(z.min(SIGMOID_ZERO_ABOVE)));
                    *x = if z > SIGMOID_ZERO_ABOVE { 0.0 } else { s };
                }
            }
        }
    }

    /// Applies the activation to a candle tensor with stock ops (any device).
    pub fn apply_tensor(self, x: &candle_core::Tensor) -> Result<candle_core::Tensor> {
        match self {
            Activation::None => Ok(x.clone()),
            Activation::Relu => x.relu(),
            Activation::HardSwish => x.broadcast_mul(&((x + 3.0)?.clamp(0f32, 6f32)? / 6.0)?),
            Activation::Sigmoid => candle_nn::ops::sigmoid(x),
        }
    }
}

/// The sigmoid `1 / (1 + e^z)`, `z = -x`, is 0 for `z` above this: at 87 it is 1.6e-38, just
/// over the smallest normal `f32` (1.2e-38), and further on its values are subnormal, which
/// Intel cores make and read with a micro-code assist of about a hundred cycles each (a
/// quarter of the output layer's values in background). XNNPACK's sigmoid zeroes the same
/// range (its `denorm_cutoff`, -87.34).
pub const SIGMOID_ZERO_ABOVE: f32 = 87.0;

/// `e^x` for the vectorised sigmoid of [`Activation::apply_slice`]: Cephes' `expf` (S. L.
/// Moshier, Cephes Math Library: `x = n ln 2 + r`, `|r| <= ln 2 / 2`, `e^r` by its degree-6
/// polynomial, `2^n` put into the exponent bits), within 2 ulp of the C library's `expf` for
/// `x` in -87..88 (`exp_poly_is_within_2_ulp_of_libm`); `x` is clamped to that range
/// (`e^-87` is 1.6e-38, `e^88` 1.7e38: the sigmoid is 0 or 1 in `f32` beyond).
///
/// Plain arithmetic and bit casts, so that a loop over it vectorises under [`simd`] (the C
/// library's `expf` is one call per value: the output layer's 36864 sigmoids per landscape
/// frame cost more than its multiply-adds).
#[inline(always)]
pub fn exp_poly(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // n = round(x / ln 2), as floor(x log2(e) + 0.5) (a single rounding instruction).
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    // r = x - n ln 2, with ln 2 in two parts (Cody and Waite) to keep r exact.
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^n: n is an integer in -126..127 for the clamped x. Its bits are read by adding
    // 1.5 * 2^23 (n then sits in the low mantissa bits) rather than by `n as i32`, whose
    // saturating conversion kept the loop from vectorising (one value at a time, about 10
    // cycles each: 0.13 of the output layer's 0.21 ms per landscape frame).
    let n_bits = (n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000);
    e * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// TensorFlow "SAME" padding along one axis: `(before, after)` for an input of `size`, a
/// kernel of `k` and a stride of `stride`. Output size is `ceil(size / stride)`; the total
/// padding `max((out - 1) * stride + k - size, 0)` is split with the extra pixel after
/// (TensorFlow `GetWindowedOutputSize`; for stride 2 on even sizes this pads bottom/right
/// only: k=3 gives (0, 1), k=5 gives (1, 2)).
pub fn same_padding(size: usize, k: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + k).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// Returns the contiguous `[C, H, W]` data of a batch-1 NCHW tensor.
fn nchw_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<(&'a [f32], [usize; 3])> {
    let data = match storage {
        CpuStorage::F32(d) => d.as_slice(),
        _ => bail!("expected an f32 tensor"),
    };
    let (n, c, h, w) = layout.shape().dims4()?;
    if n != 1 {
        bail!("expected batch size 1, got {n}");
    }
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("expected a contiguous tensor");
    };
    Ok((&data[start..end], [c, h, w]))
}

/// Runs `f(channel, chunk, scratch)` over the `C` equal chunks of `data` under [`simd`], on
/// the calling thread. `scratch` is a reusable buffer.
///
/// The kernels are deliberately single-threaded: a landscape frame is about 2 ms of work cut
/// into pieces of tens of microseconds, too small to pay for a hand-off to another thread; and
/// it leaves the other cores to OBS, the encoder and the game.
fn for_each_channel<F>(data: &mut [f32], channels: usize, f: F)
where
    F: Fn(usize, &mut [f32], &mut Vec<f32>),
{
    let plane = data.len() / channels.max(1);
    let mut scratch = Vec::new();
    // A plain loop: iterator adaptors such as `for_each` are not `inline(always)` and would
    // leave the kernels outside the SIMD context.
    simd(
        #[inline(always)]
        || {
            for (c, chunk) in data.chunks_mut(plane).enumerate() {
                f(c, chunk, &mut scratch);
            }
        },
    );
}

/// Depthwise 2D convolution (one `k`x`k` filter per channel) with TensorFlow SAME padding,
/// bias and a fused activation, as TFLite `DEPTHWISE_CONV_2D` with depth multiplier 1;
/// optionally adds the input to the activated output (`x + act(dw(x))`, stride 1).
///
/// Input `[1, C, H, W]`, output `[1, C, ceil(H / stride), ceil(W / stride)]`.
/// Weights are `C * k * k` values in `[C, 1, k, k]` order; bias has `C` values.
#[derive(Clone, Debug)]
pub struct DepthwiseConv {
    /// `[C, 1, k, k]` filter taps, row-major.
    pub weight: Vec<f32>,
    /// `[C]` bias.
    pub bias: Vec<f32>,
    /// Kernel size in pixels (3 or 5 in this network).
    pub kernel: usize,
    /// Stride in pixels (1 or 2).
    pub stride: usize,
    /// Activation applied after the bias.
    pub activation: Activation,
    /// Add the input to the output (residual refinement; stride 1 only).
    pub residual: bool,
}

impl DepthwiseConv {
    /// Output height and width for an input of `h` x `w`.
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        (h.div_ceil(self.stride), w.div_ceil(self.stride))
    }

    /// Runs the convolution on one channel plane. `input` is `h * w`, `out` is
    /// `oh * ow` as given by [`DepthwiseConv::output_size`]; `scratch` is reused between calls.
    #[inline(always)]
    pub fn run_plane(
        &self,
        c: usize,
        input: &[f32],
        h: usize,
        w: usize,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let prepared = PreparedPlane::new(input, h, w, self.kernel, self.stride, scratch);
        self.run_prepared(c, &prepared, input, out);
    }

    /// Channels `first..first + out.len() / (oh * ow)` of the layer, whole planes: `input`
    /// holds all of the layer's `h * w` input planes one after the other, `out` the chosen
    /// channels' `[n, oh * ow]` outputs. The same values, bit for bit, as
    /// [`DepthwiseConv::run_plane`] per channel; the padded layout in `scratch` is zeroed once
    /// for all the channels. What one thread runs when a layer is split between two threads
    /// by channels. Call under [`simd`].
    ///
    /// # Panics
    /// If a slice is too short for the channels asked.
    #[inline(always)]
    pub fn run_channels(
        &self,
        first: usize,
        input: &[f32],
        h: usize,
        w: usize,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let (oh, ow) = self.output_size(h, w);
        let (k, s) = (self.kernel, self.stride);
        for (i, o) in out.chunks_exact_mut(oh * ow).enumerate() {
            let c = first + i;
            let x = &input[c * h * w..(c + 1) * h * w];
            PreparedPlane::fill_interior(x, h, w, k, s, scratch, i > 0, 0..h);
            let prepared = PreparedPlane::view(scratch, h, w, k, s);
            self.run_prepared(c, &prepared, x, o);
        }
    }

    /// Runs a stride-1 layer on rows of one channel that the caller laid out with their zero
    /// border: `padded` holds `rows + k - 1` rows of `w + k - 1` values (SAME padding of `k / 2`
    /// on each side: the band's input rows, the `k / 2` rows above and below it, zero where
    /// those fall outside the plane), `out` the band's `rows * w` outputs. `input` is the
    /// band's own `rows * w` input values, added when the layer is residual. The same
    /// arithmetic, in the same order, as [`DepthwiseConv::run_plane`] on the whole plane.
    /// Call under [`simd`].
    ///
    /// # Panics
    /// If the layer has a stride other than 1 or an even kernel, or a slice is too short.
    #[inline(always)]
    pub fn run_band(
        &self,
        c: usize,
        padded: &[f32],
        input: &[f32],
        rows: usize,
        w: usize,
        out: &mut [f32],
    ) {
        let k = self.kernel;
        assert!(
            self.stride == 1 && k % 2 == 1,
            "run_band is for odd stride-1 layers"
        );
        let plane = PreparedPlane {
            data: &padded[..(rows + k - 1) * (w + k - 1)],
            k,
            s: 1,
            ph: rows + k - 1,
            pw: w + k - 1,
            oh: rows,
            ow: w,
        };
        self.run_prepared(c, &plane, &input[..rows * w], &mut out[..rows * w]);
    }

    /// Channel `c` on a laid-out plane: taps, bias, activation, then `input` added when the
    /// layer is residual.
    #[inline(always)]
    fn run_prepared(&self, c: usize, plane: &PreparedPlane, input: &[f32], out: &mut [f32]) {
        let k = self.kernel;
        plane.convolve(&self.weight[c * k * k..(c + 1) * k * k], out);
        self.activation.apply_slice(out, self.bias[c]);
        if self.residual {
            for (o, &i) in out.iter_mut().zip(input) {
                *o += i;
            }
        }
    }
}

/// One input plane laid out for a `k`x`k`, stride-`s` convolution with SAME padding: zero
/// borders added once, and for stride 2 the plane split into its 4 phases (even/odd rows x
/// even/odd columns). Every tap then reads a contiguous run of `ow` values, so the inner
/// loop is a vectorisable `out += tap * row`, with no bounds arithmetic per tap.
struct PreparedPlane<'a> {
    data: &'a [f32],
    k: usize,
    s: usize,
    /// Rows and columns of each phase.
    ph: usize,
    pw: usize,
    oh: usize,
    ow: usize,
}

impl<'a> PreparedPlane<'a> {
    #[inline(always)]
    fn new(input: &[f32], h: usize, w: usize, k: usize, s: usize, buf: &'a mut Vec<f32>) -> Self {
        Self::fill(input, h, w, k, s, buf);
        Self::view(buf, h, w, k, s)
    }

    /// Phase rows and columns, output rows and columns, top and left padding.
    #[inline(always)]
    fn geometry(h: usize, w: usize, k: usize, s: usize) -> [usize; 6] {
        let (pt, pb) = same_padding(h, k, s);
        let (pl, pr) = same_padding(w, k, s);
        let (hp, wp) = (h + pt + pb, w + pl + pr);
        [
            hp.div_ceil(s),
            wp.div_ceil(s),
            h.div_ceil(s),
            w.div_ceil(s),
            pt,
            pl,
        ]
    }

    /// A plane that [`PreparedPlane::fill`] wrote into `data`.
    #[inline(always)]
    fn view(data: &'a [f32], h: usize, w: usize, k: usize, s: usize) -> Self {
        let [ph, pw, oh, ow, _, _] = Self::geometry(h, w, k, s);
        Self {
            data,
            k,
            s,
            ph,
            pw,
            oh,
            ow,
        }
    }

    /// Writes `input` (`h * w`) padded and split into phases into `buf` (reused: no
    /// allocation once it has grown to the plane's size).
    #[inline(always)]
    fn fill(input: &[f32], h: usize, w: usize, k: usize, s: usize, buf: &mut Vec<f32>) {
        Self::fill_interior(input, h, w, k, s, buf, false, 0..h);
    }

    /// [`PreparedPlane::fill`]; with `padding_is_zero` the caller promises that `buf` holds a
    /// plane of the same geometry (`h`, `w`, `k`, `s`) already, whose zero padding is then
    /// kept and only the input's values are written. A buffer of another length is zeroed
    /// whole all the same. Only the input rows `rows` are written.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn fill_interior(
        input: &[f32],
        h: usize,
        w: usize,
        k: usize,
        s: usize,
        buf: &mut Vec<f32>,
        padding_is_zero: bool,
        rows: std::ops::Range<usize>,
    ) {
        let [ph, pw, _, _, pt, pl] = Self::geometry(h, w, k, s);
        if !padding_is_zero || buf.len() != s * s * ph * pw {
            buf.clear();
            buf.resize(s * s * ph * pw, 0.0);
        }
        let phase_len = ph * pw;
        for (y, row) in input
            .chunks_exact(w)
            .enumerate()
            .take(rows.end.min(h))
            .skip(rows.start)
        {
            let py = y + pt;
            if s == 1 {
                buf[py * pw + pl..py * pw + pl + w].copy_from_slice(row);
            } else {
                // Stride 2: padded column px goes to phase (py & 1, px & 1) at px >> 1.
                let planes = (py & 1) * 2 * phase_len;
                let (even, odd) = buf[planes..planes + 2 * phase_len].split_at_mut(phase_len);
                let row_off = (py >> 1) * pw;
                let (even, odd) = (
                    &mut even[row_off..row_off + pw],
                    &mut odd[row_off..row_off + pw],
                );
                let mut x = 0;
                if pl & 1 == 1 {
                    odd[pl >> 1] = row[0];
                    x = 1;
                }
                // From here x + pl is even: pairs deinterleave into the two phases.
                let first = (x + pl) >> 1;
                let rest = &row[x..];
                let pairs = rest.len() / 2;
                let (e, o) = (
                    &mut even[first..first + pairs],
                    &mut odd[first..first + pairs],
                );
                for ((e, o), p) in e.iter_mut().zip(o.iter_mut()).zip(rest.chunks_exact(2)) {
                    *e = p[0];
                    *o = p[1];
                }
                if rest.len() % 2 == 1 {
                    even[first + pairs] = rest[rest.len() - 1];
                }
            }
        }
    }

    /// `out += conv(plane, taps)` for `k * k` taps (row-major), `out` being `oh * ow`.
    #[inline(always)]
    fn accumulate(&self, taps: &[f32], out: &mut [f32]) {
        self.accumulate_or_set::<true>(taps, out);
    }

    /// `out = conv(plane, taps)`: the bits of [`PreparedPlane::accumulate`] into zeros,
    /// without a pass that zeroes `out` and loads it back.
    #[inline(always)]
    fn convolve(&self, taps: &[f32], out: &mut [f32]) {
        self.accumulate_or_set::<false>(taps, out);
    }

    #[inline(always)]
    fn accumulate_or_set<const ADD: bool>(&self, taps: &[f32], out: &mut [f32]) {
        if fused_multiply_add() {
            self.accumulate_with::<Fused, ADD>(taps, out);
        } else {
            self.accumulate_with::<Separate, ADD>(taps, out);
        }
    }

    #[inline(always)]
    fn accumulate_with<M: MulAdd, const ADD: bool>(&self, taps: &[f32], out: &mut [f32]) {
        // Monomorphised for the shapes of this network so the tap loops unroll.
        match (self.k, self.s) {
            (3, 1) => self.accumulate_k::<3, 1, M, ADD>(taps, out),
            (3, 2) => self.accumulate_k::<3, 2, M, ADD>(taps, out),
            (5, 1) => self.accumulate_k::<5, 1, M, ADD>(taps, out),
            (5, 2) => self.accumulate_k::<5, 2, M, ADD>(taps, out),
            _ => {
                if !ADD {
                    out.fill(0.0);
                }
                self.accumulate_any::<M>(self.k, self.s, taps, out)
            }
        }
    }

    /// With `ADD` false the accumulators start at zero instead of at `out`'s values.
    #[inline(always)]
    fn accumulate_k<const K: usize, const S: usize, M: MulAdd, const ADD: bool>(
        &self,
        taps: &[f32],
        out: &mut [f32],
    ) {
        let taps: &[f32; 25] = &{
            let mut t = [0f32; 25];
            t[..K * K].copy_from_slice(&taps[..K * K]);
            t
        };
        let (pw, ow) = (self.pw, self.ow);
        let phase_len = self.ph * pw;
        for (oy, out_row) in out.chunks_exact_mut(ow).enumerate().take(self.oh) {
            // Blocks of BLOCK outputs stay in registers across all K*K taps.
            let mut x0 = 0;
            while x0 + BLOCK <= ow {
                let mut acc: [f32; BLOCK] = if ADD {
                    out_row[x0..x0 + BLOCK].try_into().expect("block")
                } else {
                    [0.0; BLOCK]
                };
                for ky in 0..K {
                    for kx in 0..K {
                        let phase = (ky % S) * S + kx % S;
                        let base = phase * phase_len + (oy + ky / S) * pw + kx / S + x0;
                        let src: &[f32; BLOCK] =
                            self.data[base..base + BLOCK].try_into().expect("block");
                        let t = taps[ky * K + kx];
                        for i in 0..BLOCK {
                            acc[i] = M::mul_add(t, src[i], acc[i]);
                        }
                    }
                }
                out_row[x0..x0 + BLOCK].copy_from_slice(&acc);
                x0 += BLOCK;
            }
            if x0 < ow {
                let n = ow - x0;
                if !ADD {
                    out_row[x0..].fill(0.0);
                }
                for ky in 0..K {
                    for kx in 0..K {
                        let phase = (ky % S) * S + kx % S;
                        let base = phase * phase_len + (oy + ky / S) * pw + kx / S + x0;
                        let t = taps[ky * K + kx];
                        for (o, &v) in out_row[x0..].iter_mut().zip(&self.data[base..base + n]) {
                            *o = M::mul_add(t, v, *o);
                        }
                    }
                }
            }
        }
    }

    #[inline(always)]
    fn accumulate_any<M: MulAdd>(&self, k: usize, s: usize, taps: &[f32], out: &mut [f32]) {
        let (pw, ow) = (self.pw, self.ow);
        let phase_len = self.ph * pw;
        for (oy, out_row) in out.chunks_exact_mut(ow).enumerate().take(self.oh) {
            for ky in 0..k {
                for kx in 0..k {
                    let phase = (ky % s) * s + kx % s;
                    let base = phase * phase_len + (oy + ky / s) * pw + kx / s;
                    let t = taps[ky * k + kx];
                    for (o, &v) in out_row.iter_mut().zip(&self.data[base..base + ow]) {
                        *o = M::mul_add(t, v, *o);
                    }
                }
            }
        }
    }
}

/// How a kernel computes `a * b + c`: [`Fused`] where the CPU has a fused multiply-add
/// (one instruction, one rounding, as XNNPACK computes), [`Separate`] otherwise (two
/// instructions; `f32::mul_add` would be a library call per value there). Picked once per
/// call by [`fused_multiply_add`], so both are compiled into each [`simd`] context.
trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// `a * b + c` with one rounding (`vfmadd` under [`simd`] on x86-64 with FMA, `fmla` on
/// aarch64).
struct Fused;

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// `a * b + c` as a multiply and an add.
struct Separate;

impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Whether this CPU has a fused multiply-add instruction that [`simd`] enables: AVX2 and
/// FMA on x86-64 (checked at run time, cached), always on aarch64.
#[inline(always)]
fn fused_multiply_add() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx2_fma()
    }
    #[cfg(target_arch = "aarch64")]
    {
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Output values per register block in [`PreparedPlane::accumulate`] (two AVX registers).
const BLOCK: usize = 16;

/// A dense `k`x`k` convolution with TensorFlow SAME padding, bias and activation, computed
/// directly (the network's stem: 3 -> 16 channels, 3x3, stride 2, hard-swish). Weights are
/// `[Cout, Cin, k, k]` row-major.
#[derive(Clone, Debug)]
pub struct DenseConv {
    /// `[Cout, Cin, k, k]` taps.
    pub weight: Vec<f32>,
    /// `[Cout]` bias.
    pub bias: Vec<f32>,
    /// Input channels.
    pub cin: usize,
    /// Kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Activation after the bias.
    pub activation: Activation,
}

impl CustomOp1 for DenseConv {
    fn name(&self) -> &'static str {
        "dense-conv2d-same"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (input, [c, h, w]) = nchw_slice(storage, layout)?;
        let (k, s) = (self.kernel, self.stride);
        if c != self.cin || self.weight.len() != self.bias.len() * c * k * k {
            bail!(
                "dense conv weights are for {} input channels, got {c}",
                self.cin
            );
        }
        // Lay out every input channel once; all output channels read them.
        let mut buffers: Vec<Vec<f32>> = vec![Vec::new(); c];
        let planes: Vec<PreparedPlane> = buffers
            .iter_mut()
            .enumerate()
            .map(|(ci, buf)| {
                PreparedPlane::new(&input[ci * h * w..(ci + 1) * h * w], h, w, k, s, buf)
            })
            .collect();
        let (oh, ow) = (h.div_ceil(s), w.div_ceil(s));
        let cout = self.bias.len();
        let mut out = vec![0f32; cout * oh * ow];
        for_each_channel(
            &mut out,
            cout,
            #[inline(always)]
            |co, o, _| {
                for (ci, plane) in planes.iter().enumerate() {
                    let base = (co * c + ci) * k * k;
                    plane.accumulate(&self.weight[base..base + k * k], o);
                }
                self.activation.apply_slice(o, self.bias[co]);
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((1, cout, oh, ow))))
    }
}

impl CustomOp1 for DepthwiseConv {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-same"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (input, [c, h, w]) = nchw_slice(storage, layout)?;
        if self.weight.len() != c * self.kernel * self.kernel || self.bias.len() != c {
            bail!(
                "depthwise weights are for {} channels, input has {c}",
                self.bias.len()
            );
        }
        if self.residual && self.stride != 1 {
            bail!("a residual depthwise convolution needs stride 1");
        }
        let (oh, ow) = self.output_size(h, w);
        let mut out = vec![0f32; c * oh * ow];
        for_each_channel(
            &mut out,
            c,
            #[inline(always)]
            |ch, o, scratch| {
                self.run_plane(ch, &input[ch * h * w..(ch + 1) * h * w], h, w, o, scratch)
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((1, c, oh, ow))))
    }
}

/// Returns the contiguous data of an f32 tensor with its channel count (dim 1).
fn channels_mut<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
) -> Result<(&'a mut [f32], usize)> {
    let data = match storage {
        CpuStorage::F32(d) => d.as_mut_slice(),
        _ => bail!("expected an f32 tensor"),
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("expected a contiguous tensor");
    };
    let dims = layout.shape().dims();
    if dims.len() < 2 || dims[0] != 1 {
        bail!("expected a [1, C, ...] tensor, got {dims:?}");
    }
    Ok((&mut data[start..end], dims[1]))
}

/// The contiguous `len` values of an f32 tensor; an error for any other dtype, layout or size.
pub(crate) fn source<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    len: usize,
) -> Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(d) => d.as_slice(),
        _ => bail!("expected an f32 tensor"),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) if end - start == len => Ok(&data[start..end]),
        _ => bail!("expected a contiguous source of {len} values"),
    }
}

/// A 1x1 convolution as one matrix product `[Cout, Cin] x [Cin, H*W]` followed, in the same
/// op, by bias, activation and an optional residual add (second operand, `[1, Cout, H, W]`).
///
/// The product runs through `ndarray` / `matrixmultiply` (runtime-dispatched AVX2/FMA kernels,
/// single-threaded) rather than `Tensor::matmul`: candle 0.11 looks up the CPU topology on every
/// CPU matmul when `RAYON_NUM_THREADS` is unset, which cost more than this network's products.
#[derive(Clone, Copy, Debug)]
pub struct PointwiseConv<'a> {
    /// `[Cout, Cin]` row-major.
    pub weight: &'a [f32],
    /// `[Cout]`.
    pub bias: &'a [f32],
    /// Activation after the bias (before the residual add).
    pub activation: Activation,
}

impl PointwiseConv<'_> {
    fn run(&self, x: &[f32], cin: usize, hw: usize, residual: Option<&[f32]>) -> Result<Vec<f32>> {
        let cout = self.bias.len();
        if self.weight.len() != cout * cin {
            bail!(
                "1x1 conv weights are {} values, expected {cout} x {cin}",
                self.weight.len()
            );
        }
        let mut out = vec![0f32; cout * hw];
        let shape_err = |e: ndarray::ShapeError| candle_core::Error::Msg(e.to_string());
        let w = ndarray::ArrayView2::from_shape((cout, cin), self.weight).map_err(shape_err)?;
        let xv = ndarray::ArrayView2::from_shape((cin, hw), x).map_err(shape_err)?;
        let mut ov = ndarray::ArrayViewMut2::from_shape((cout, hw), &mut out).map_err(shape_err)?;
        ndarray::linalg::general_mat_mul(1.0, &w, &xv, 0.0, &mut ov);
        let (bias, act) = (self.bias, self.activation);
        for_each_channel(
            &mut out,
            cout,
            #[inline(always)]
            |o, chunk, _| {
                act.apply_slice(chunk, bias[o]);
                if let Some(r) = residual {
                    for (v, &add) in chunk.iter_mut().zip(&r[o * hw..(o + 1) * hw]) {
                        *v += add;
                    }
                }
            },
        );
        Ok(out)
    }
}

impl CustomOp1 for PointwiseConv<'_> {
    fn name(&self) -> &'static str {
        "pointwise-conv"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, [c, h, w]) = nchw_slice(storage, layout)?;
        let out = self.run(x, c, h * w, None)?;
        Ok((
            CpuStorage::F32(out),
            Shape::from((1, self.bias.len(), h, w)),
        ))
    }
}

impl CustomOp2 for PointwiseConv<'_> {
    fn name(&self) -> &'static str {
        "pointwise-conv-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, [c, h, w]) = nchw_slice(s1, l1)?;
        let residual = source(s2, l2, self.bias.len() * h * w)?;
        let out = self.run(x, c, h * w, Some(residual))?;
        Ok((
            CpuStorage::F32(out),
            Shape::from((1, self.bias.len(), h, w)),
        ))
    }
}

/// `dst += src * gate[c]` in place on contiguous `[1, C, H, W]` tensors: a skip connection
/// weighted by a per-channel gate, added to the upsampled decoder path.
#[derive(Clone, Debug)]
pub struct GatedAdd {
    /// `[C]` gate values.
    pub gate: Vec<f32>,
}

impl InplaceOp2 for GatedAdd {
    fn name(&self) -> &'static str {
        "gated-add"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        src: &CpuStorage,
        src_l: &Layout,
    ) -> Result<()> {
        let (data, c) = channels_mut(dst, dst_l)?;
        if c != self.gate.len() {
            bail!("gate has {} channels, tensor {c}", self.gate.len());
        }
        let skip = source(src, src_l, data.len())?;
        let plane = data.len() / c.max(1);
        for_each_channel(
            data,
            c,
            #[inline(always)]
            |ch, chunk, _| {
                let g = self.gate[ch];
                for (x, &s) in chunk.iter_mut().zip(&skip[ch * plane..(ch + 1) * plane]) {
                    *x += s * g;
                }
            },
        );
        Ok(())
    }
}

/// 2x bilinear upsampling with half-pixel centres and clamp-to-edge (TFLite
/// `RESIZE_BILINEAR` with `half_pixel_centers`, PyTorch `align_corners=False`):
/// `[1, C, H, W]` -> `[1, C, 2H, 2W]`. Along each axis output `2i` is `0.25 x[i-1] + 0.75 x[i]`
/// and `2i + 1` is `0.75 x[i] + 0.25 x[i+1]`, indices clamped.
#[derive(Clone, Copy, Debug, Default)]
pub struct Upsample2x;

impl Upsample2x {
    /// One channel: `input` `h * w` -> `out` `2h * 2w`; `rows` is reused scratch (`h * 2w`
    /// values, grown once).
    #[inline(always)]
    pub fn plane(input: &[f32], h: usize, w: usize, out: &mut [f32], rows: &mut Vec<f32>) {
        let ow = 2 * w;
        // Horizontal pass of each input row (reused by two output rows below).
        if rows.len() < h * ow {
            rows.resize(h * ow, 0.0);
        }
        for y in 0..h {
            Self::row(&input[y * w..(y + 1) * w], &mut rows[y * ow..(y + 1) * ow]);
        }
        for y in 0..h {
            let up = &rows[y.saturating_sub(1) * ow..][..ow];
            let mid = &rows[y * ow..][..ow];
            let down = &rows[(y + 1).min(h - 1) * ow..][..ow];
            let (top, bottom) = out[2 * y * ow..(2 * y + 2) * ow].split_at_mut(ow);
            Self::blend(up, mid, top);
            Self::blend(down, mid, bottom);
        }
    }

    /// One channel's output rows `out_rows` (of `2h`): `input` `h * w` -> `out`
    /// `out_rows.len() * 2w`, the bits of [`Upsample2x::plane`] at those rows (the same
    /// [`Upsample2x::row`] and [`Upsample2x::blend`] per value). `rows` is scratch for the
    /// horizontally upsampled input rows, [`Upsample2x::rows_scratch`] values. What one
    /// thread computes when an upsampled layer is split by rows, and what a band of rows
    /// needs.
    ///
    /// # Panics
    /// If `rows` or `out` is shorter than that.
    #[inline(always)]
    pub fn plane_rows(
        input: &[f32],
        (h, w): (usize, usize),
        out_rows: std::ops::Range<usize>,
        out: &mut [f32],
        rows: &mut [f32],
    ) {
        let ow = 2 * w;
        let (lo, hi) = (out_rows.start, out_rows.end.min(2 * h));
        if lo >= hi {
            return;
        }
        // Input rows y_lo..y_hi hold every row these output rows blend.
        let (y_lo, y_hi) = ((lo / 2).saturating_sub(1), ((hi - 1) / 2 + 2).min(h));
        for y in y_lo..y_hi {
            Self::row(
                &input[y * w..(y + 1) * w],
                &mut rows[(y - y_lo) * ow..(y - y_lo + 1) * ow],
            );
        }
        for yy in lo..hi {
            // Output row yy lies between input row y and its neighbour (above for even
            // rows, below for odd ones; clamped), as in `plane`.
            let y = yy / 2;
            let other = if yy % 2 == 0 {
                y.saturating_sub(1)
            } else {
                (y + 1).min(h - 1)
            };
            let near = &rows[(y - y_lo) * ow..][..ow];
            let far = &rows[(other - y_lo) * ow..][..ow];
            Self::blend(far, near, &mut out[(yy - lo) * ow..][..ow]);
        }
    }

    /// Scratch values [`Upsample2x::plane_rows`] needs for `n` output rows of `2w` values
    /// (at most `n / 2 + 3` input rows upsampled horizontally).
    pub fn rows_scratch(n: usize, w: usize) -> usize {
        (n / 2 + 3) * 2 * w
    }

    /// The horizontal pass of one row: `src` `w` values -> `dst` `2w`.
    #[inline(always)]
    pub fn row(src: &[f32], dst: &mut [f32]) {
        let w = src.len();
        let dst = &mut dst[..2 * w];
        let (first, last) = (src[0], src[w - 1]);
        // The edges clamp: output 0 and 2w - 1 are the edge pixels themselves.
        dst[0] = 0.25 * first + 0.75 * first;
        dst[2 * w - 1] = 0.25 * last + 0.75 * last;
        if w == 1 {
            return;
        }
        dst[1] = 0.25 * src[1] + 0.75 * first;
        dst[2 * w - 2] = 0.25 * src[w - 2] + 0.75 * last;
        // Inside, on equal-length slices so the loop has no bounds checks and vectorises.
        let n = w - 2;
        let (l, c, r) = (&src[..n], &src[1..n + 1], &src[2..]);
        let inner = &mut dst[2..2 + 2 * n];
        for i in 0..n {
            inner[2 * i] = 0.25 * l[i] + 0.75 * c[i];
            inner[2 * i + 1] = 0.25 * r[i] + 0.75 * c[i];
        }
    }

    /// The vertical pass: `out = 0.25 * far + 0.75 * near` (the output row between the
    /// horizontally upsampled input rows `near`, the closer, and `far`).
    #[inline(always)]
    pub fn blend(far: &[f32], near: &[f32], out: &mut [f32]) {
        for ((o, &f), &n) in out.iter_mut().zip(far).zip(near) {
            *o = 0.25 * f + 0.75 * n;
        }
    }
}

impl CustomOp1 for Upsample2x {
    fn name(&self) -> &'static str {
        "upsample-bilinear-2x"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (input, [c, h, w]) = nchw_slice(storage, layout)?;
        let mut out = vec![0f32; c * 4 * h * w];
        for_each_channel(
            &mut out,
            c,
            #[inline(always)]
            |ch, o, rows| Self::plane(&input[ch * h * w..(ch + 1) * h * w], h, w, o, rows),
        );
        Ok((CpuStorage::F32(out), Shape::from((1, c, 2 * h, 2 * w))))
    }
}

/// The output layer in one pass: a 2x2 stride-2 transposed convolution `C -> 1` with bias
/// (non-overlapping 2x2 output blocks), then a sigmoid. `[1, C, H, W]` -> `[1, 1, 2H, 2W]`.
#[derive(Clone, Debug)]
pub struct TransposedConv2x2Sigmoid {
    /// `[C, 1, 2, 2]` taps (candle `conv_transpose2d` layout), row-major.
    pub weight: Vec<f32>,
    /// The output bias.
    pub bias: f32,
}

impl CustomOp1 for TransposedConv2x2Sigmoid {
    fn name(&self) -> &'static str {
        "transposed-conv-2x2-sigmoid"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (input, [c, h, w]) = nchw_slice(storage, layout)?;
        if self.weight.len() != 4 * c {
            bail!(
                "transposed conv weights are for {} channels, input has {c}",
                self.weight.len() / 4
            );
        }
        let out = simd(
            #[inline(always)]
            || {
                let plane = h * w;
                // One accumulator plane per output offset (dy, dx): contiguous updates, then a
                // single interleaving pass with the sigmoid.
                let mut acc = vec![self.bias; 4 * plane];
                for ch in 0..c {
                    let src = &input[ch * plane..(ch + 1) * plane];
                    for (j, a) in acc.chunks_exact_mut(plane).enumerate() {
                        let t = self.weight[4 * ch + j];
                        for (o, &v) in a.iter_mut().zip(src) {
                            *o += t * v;
                        }
                    }
                }
                let ow = 2 * w;
                let mut out = vec![0f32; 4 * plane];
                for y in 0..h {
                    let (top, bottom) = out[2 * y * ow..(2 * y + 2) * ow].split_at_mut(ow);
                    for x in 0..w {
                        let i = y * w + x;
                        top[2 * x] = acc[i];
                        top[2 * x + 1] = acc[plane + i];
                        bottom[2 * x] = acc[2 * plane + i];
                        bottom[2 * x + 1] = acc[3 * plane + i];
                    }
                }
                Activation::Sigmoid.apply_slice(&mut out, 0.0);
                out
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((1, 1, 2 * h, 2 * w))))
    }
}

impl DenseConv {
    /// Lays out the input rows that output rows `out_rows` read (with SAME padding:
    /// `out_rows.start * stride - top` up to `(out_rows.end - 1) * stride + kernel - top`,
    /// within `0..h`) of each of the `cin` planes of `input` (`[cin, h, w]`) into `bufs` (one
    /// reused buffer per input channel) for [`DenseConv::run_rows`]. Rows outside are left
    /// as they were, so each thread lays out the rows its own output rows read into buffers
    /// of its own and reads no value the other thread wrote. With `same_size` the caller
    /// promises that `bufs` hold the layout of an `h` x `w` input of this layer already (an
    /// earlier frame's): their zero padding is kept and only the input's values are
    /// written; otherwise each buffer is zeroed first. Call under [`simd`].
    #[inline(always)]
    pub fn prepare_rows(
        &self,
        input: &[f32],
        (h, w): (usize, usize),
        bufs: &mut [Vec<f32>],
        same_size: bool,
        out_rows: std::ops::Range<usize>,
    ) {
        let (k, s) = (self.kernel, self.stride);
        let (top, _) = same_padding(h, k, s);
        let first = (out_rows.start * s).saturating_sub(top);
        let end = (out_rows.end.saturating_sub(1) * s + k)
            .saturating_sub(top)
            .min(h);
        for (ci, buf) in bufs.iter_mut().enumerate().take(self.cin) {
            PreparedPlane::fill_interior(
                &input[ci * h * w..(ci + 1) * h * w],
                h,
                w,
                k,
                s,
                buf,
                same_size,
                first..end,
            );
        }
    }

    /// Whether this is the network's stem shape (3x3, stride 2, 3 input channels), the one
    /// [`DenseConv::run_rows`] runs.
    pub fn is_stem(&self) -> bool {
        (self.kernel, self.stride, self.cin) == (3, 2, 3)
    }

    /// Every output channel at the pixels of `out`'s columns (`out` `[cout, oh*ow]`, its
    /// columns whole output rows), from planes laid out by [`DenseConv::prepare_rows`] for
    /// an `h` x `w` input: what a thread computes when the stem is split by rows, so the
    /// next layer (split by the same rows) reads what this core wrote. Each value gets the
    /// bits of the custom op's one-channel-at-a-time path. No allocation. Does nothing unless
    /// [`DenseConv::is_stem`], `bufs` holds 3 planes, `out` has `cout` rows of `oh * ow`
    /// and its columns are whole rows. Call under [`simd`].
    #[inline(always)]
    pub fn run_rows(&self, bufs: &[Vec<f32>], h: usize, w: usize, out: &mut ColumnsMut) {
        let (k, s) = (self.kernel, self.stride);
        let geometry = PreparedPlane::view(&bufs[0], h, w, k, s);
        let ow = geometry.ow;
        let cols = out.columns();
        if !self.is_stem()
            || bufs.len() < 3
            || out.rows() != self.bias.len()
            || out.stride() != geometry.oh * ow
            || cols.start % ow != 0
            || cols.end % ow != 0
        {
            return;
        }
        let rows = cols.start / ow..cols.end / ow;
        let cout = out.rows();
        let whole = cout / STEM_GROUP * STEM_GROUP;
        let first = cols.start;
        // The activation follows each group while its planes are still in the L1/L2 cache
        // (after all 16, a landscape frame's 590 KB, it made one thread 2-3 % slower).
        for co in (0..whole).step_by(STEM_GROUP) {
            let mut outs = out.rows_mut::<STEM_GROUP>(co);
            self.stem_group::<STEM_GROUP>(
                &geometry,
                bufs,
                co,
                rows.clone(),
                #[inline(always)]
                |i, at, v| {
                    let at = at - first;
                    outs[i][at..at + v.len()].copy_from_slice(v);
                },
            );
            for (i, o) in outs.iter_mut().enumerate() {
                self.activation.apply_slice(o, self.bias[co + i]);
            }
        }
        for co in whole..cout {
            self.stem_group::<1>(
                &geometry,
                bufs,
                co,
                rows.clone(),
                #[inline(always)]
                |_, at, v| {
                    let at = at - first;
                    out.row(co)[at..at + v.len()].copy_from_slice(v);
                },
            );
            self.activation.apply_slice(out.row(co), self.bias[co]);
        }
    }

    /// Output channels `co..co + G` of a 3x3, stride-2 layer with 3 input channels at the
    /// output rows `rows`, from the planes in `bufs` laid out as `geometry` (that of
    /// `bufs[0]`), before the bias and activation: `store(i, at, values)` takes the values
    /// of channel `co + i` from pixel `at` (`oy * ow + x`) on. Each block of [`BLOCK`] outputs of
    /// the group stays in registers across all 27 taps, so every input load serves `G`
    /// channels (one channel at a time, each load served one). Per output the same fused
    /// multiply-adds in the same order (input channel, tap row, tap column) as
    /// [`PreparedPlane::convolve`] then [`PreparedPlane::accumulate`] per input channel: the
    /// same bits.
    #[inline(always)]
    fn stem_group<const G: usize>(
        &self,
        geometry: &PreparedPlane,
        bufs: &[Vec<f32>],
        co: usize,
        rows: std::ops::Range<usize>,
        store: impl FnMut(usize, usize, &[f32]),
    ) {
        if fused_multiply_add() {
            self.stem_group_with::<Fused, G>(geometry, bufs, co, rows, store);
        } else {
            self.stem_group_with::<Separate, G>(geometry, bufs, co, rows, store);
        }
    }

    #[inline(always)]
    fn stem_group_with<M: MulAdd, const G: usize>(
        &self,
        geometry: &PreparedPlane,
        bufs: &[Vec<f32>],
        co: usize,
        rows: std::ops::Range<usize>,
        mut store: impl FnMut(usize, usize, &[f32]),
    ) {
        const K: usize = 3;
        const S: usize = 2;
        const C: usize = 3;
        let (pw, ow) = (geometry.pw, geometry.ow);
        let phase_len = geometry.ph * pw;
        let len = S * S * phase_len;
        let data: [&[f32]; C] = [&bufs[0][..len], &bufs[1][..len], &bufs[2][..len]];
        let taps: [[f32; C * K * K]; G] = std::array::from_fn(|g| {
            let base = (co + g) * C * K * K;
            self.weight[base..base + C * K * K]
                .try_into()
                .expect("3x3x3 taps")
        });
        for oy in rows.start..rows.end.min(geometry.oh) {
            let mut x0 = 0;
            while x0 + BLOCK <= ow {
                let mut acc = [[0f32; BLOCK]; G];
                for (ci, d) in data.iter().enumerate() {
                    for ky in 0..K {
                        for kx in 0..K {
                            let phase = (ky % S) * S + kx % S;
                            let base = phase * phase_len + (oy + ky / S) * pw + kx / S + x0;
                            let src: &[f32; BLOCK] =
                                d[base..base + BLOCK].try_into().expect("block");
                            for (a, t) in acc.iter_mut().zip(&taps) {
                                let t = t[(ci * K + ky) * K + kx];
                                for i in 0..BLOCK {
                                    a[i] = M::mul_add(t, src[i], a[i]);
                                }
                            }
                        }
                    }
                }
                for (g, a) in acc.iter().enumerate() {
                    store(g, oy * ow + x0, a);
                }
                x0 += BLOCK;
            }
            for x in x0..ow {
                for (g, t) in taps.iter().enumerate() {
                    let mut a = 0f32;
                    for (ci, d) in data.iter().enumerate() {
                        for ky in 0..K {
                            for kx in 0..K {
                                let phase = (ky % S) * S + kx % S;
                                let at = phase * phase_len + (oy + ky / S) * pw + kx / S + x;
                                a = M::mul_add(t[(ci * K + ky) * K + kx], d[at], a);
                            }
                        }
                    }
                    store(g, oy * ow + x, &[a]);
                }
            }
        }
    }
}

/// Output channels per register group of the stem ([`DenseConv::run_rows`]): 4 x
/// [`BLOCK`] accumulators are 8 of the 16 AVX registers.
const STEM_GROUP: usize = 4;

/// Rows of output channels per register block of [`pointwise_gemm`]; the weights are packed
/// in blocks of this many rows by [`pack_pointwise`].
pub const POINTWISE_ROWS: usize = 4;
/// Pixels per register block of [`pointwise_gemm`] (two AVX registers per row).
pub const POINTWISE_COLS: usize = 16;
/// Values of the largest input panel [`pointwise_gemm`] copies (`cin x 16`, up to 128 inputs:
/// every layer of this network).
const MAX_PANEL: usize = 128 * POINTWISE_COLS;

/// Packs a row-major `[cout, cin]` 1x1-convolution weight for [`pointwise_gemm`]: blocks of
/// [`POINTWISE_ROWS`] output rows, each stored `[cin][POINTWISE_ROWS]`, so the kernel reads
/// one contiguous group of weights per input channel. `row_scale` and `col_scale` (output and
/// input channel gates) are multiplied in as the weights are packed. `out` is resized to
/// `cout * cin` (no allocation once grown).
///
/// # Panics
/// Never for the shapes checked at load time: `cout` must be a multiple of
/// [`POINTWISE_ROWS`] (every 1x1 layer of this network is).
pub fn pack_pointwise(
    weight: &[f32],
    cout: usize,
    cin: usize,
    row_scale: Option<&[f32]>,
    col_scale: Option<&[f32]>,
    out: &mut Vec<f32>,
) {
    const R: usize = POINTWISE_ROWS;
    out.resize(cout * cin, 0.0);
    for (b, block) in out.chunks_exact_mut(cin * R).enumerate() {
        for (k, group) in block.chunks_exact_mut(R).enumerate() {
            let col = col_scale.map_or(1.0, |g| g[k]);
            for (r, v) in group.iter_mut().enumerate() {
                let o = b * R + r;
                *v = weight[o * cin + k] * col * row_scale.map_or(1.0, |g| g[o]);
            }
        }
    }
}

/// A 1x1 convolution on `[cin, hw]` input: `out[o] = act(sum_k W[o, k] x[k] + bias[o])`
/// `+ residual[o]`, for the `bias.len()` output rows whose weights `packed` holds (packed by
/// [`pack_pointwise`]; a block-aligned slice of a packed weight gives a block of rows). A
/// register-blocked product ([`POINTWISE_ROWS`] x 16 outputs stay in registers across all
/// `cin` inputs) with bias, activation and residual in the same pass; no allocation.
/// Call under [`simd`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn pointwise_gemm(
    packed: &[f32],
    bias: &[f32],
    act: Activation,
    x: &[f32],
    cin: usize,
    hw: usize,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    let rows = bias.len() / POINTWISE_ROWS * POINTWISE_ROWS;
    let mut out = ColumnsMut::new(&mut out[..rows * hw], hw);
    pointwise_gemm_columns(packed, bias, act, x, cin, hw, residual, &mut out);
}

/// [`pointwise_gemm`] on the pixels `out.columns()` only: `out` gives those columns of the
/// `[bias.len() / 4 * 4, hw]` output (one row per output channel), `x` and `residual` are the
/// whole `[cin, hw]` and `[cout, hw]` planes. The same values, bit for bit, as the whole
/// product at those pixels when the columns start at a multiple of 16 (each 16-pixel block is
/// computed alone; the pixels after the last whole block one at a time). What one thread
/// runs when a layer is split by pixels. Call under [`simd`].
///
/// # Panics
/// If `out` has fewer rows than the weights' whole blocks or a slice is too short.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn pointwise_gemm_columns(
    packed: &[f32],
    bias: &[f32],
    act: Activation,
    x: &[f32],
    cin: usize,
    hw: usize,
    residual: Option<&[f32]>,
    out: &mut ColumnsMut,
) {
    const R: usize = POINTWISE_ROWS;
    const N: usize = POINTWISE_COLS;
    let x = &x[..cin * hw];
    let blocks = bias.len() / R;
    let cols = out.columns();
    assert!(
        out.stride() == hw
            && out.rows() >= blocks * R
            && packed.len() >= blocks * R * cin
            && residual.is_none_or(|r| r.len() >= blocks * R * hw)
    );
    // Column blocks outside, row blocks inside: the `cin x 16` input block stays in L1 while
    // every group of output rows reads it.
    // The input block is first copied into a contiguous panel: the planes of 9216 (and 1024)
    // pixels are a multiple of 4 KiB apart, so the `cin` rows of a block share one L1 set and
    // evicted each other between row groups (`examples/pointwise.rs`: 16 -> 16 channels at 9216
    // pixels 15.8 -> 28.7 GMAC/s).
    let packs = cin * N <= MAX_PANEL && hw % 1024 == 0;
    // The panel (8 KiB) only where it is used: zeroing it costs a pass of its own. Shared
    // with the AVX2 body.
    let mut panel_buf;
    let panel: &mut [f32] = if packs {
        panel_buf = [0f32; MAX_PANEL];
        &mut panel_buf[..cin * N]
    } else {
        &mut []
    };
    let mut j = cols.start;
    #[cfg(target_arch = "x86_64")]
    if act != Activation::Sigmoid && has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA; the assertion (with `x` cut to `cin * hw`
        // above) is the function's bounds contract, and `panel` is empty or `cin * 16`
        // values with `cin * 16 <= MAX_PANEL`.
        j = unsafe { pointwise_avx2(packed, bias, act, x, cin, hw, residual, out, panel) };
    }
    while j + N <= cols.end {
        if packs {
            for (k, dst) in panel.chunks_exact_mut(N).enumerate() {
                dst.copy_from_slice(&x[k * hw + j..k * hw + j + N]);
            }
        }
        for b in 0..blocks {
            let w = &packed[b * R * cin..(b + 1) * R * cin];
            let mut acc = [[0f32; N]; R];
            if packs {
                gemm_block(w, panel, cin, N, 0, &mut acc);
            } else {
                gemm_block(w, x, cin, hw, j, &mut acc);
            }
            for (r, a) in acc.iter_mut().enumerate() {
                let o = (b * R + r) * hw + j;
                act.apply_slice(a, bias[b * R + r]);
                let dst = &mut out.row(b * R + r)[j - cols.start..][..N];
                match residual {
                    Some(res) => {
                        for ((d, v), add) in dst.iter_mut().zip(a.iter()).zip(&res[o..o + N]) {
                            *d = v + add;
                        }
                    }
                    None => dst.copy_from_slice(a),
                }
            }
        }
        j += N;
    }
    // Remaining pixels (none for this network's sizes), one at a time.
    for jj in j..cols.end {
        for b in 0..blocks {
            let w = &packed[b * R * cin..(b + 1) * R * cin];
            for r in 0..R {
                let mut z = 0.0;
                for k in 0..cin {
                    z += w[k * R + r] * x[k * hw + jj];
                }
                let o = (b * R + r) * hw + jj;
                out.row(b * R + r)[jj - cols.start] =
                    act.apply(z + bias[b * R + r]) + residual.map_or(0.0, |res| res[o]);
            }
        }
    }
}

/// Exclusive access to the columns `lo..hi` of every row of a row-major `[rows, stride]`
/// buffer: with one row per channel plane, the pixels `lo..hi` of every channel, which is what
/// one thread writes when a layer is split by pixels. [`ColumnsMut::split_at`] gives two
/// views that share no value, so two threads write one stack of planes, each its own pixels,
/// as two `&mut` slices would.
#[derive(Debug)]
pub struct ColumnsMut<'a> {
    ptr: *mut f32,
    rows: usize,
    stride: usize,
    lo: usize,
    hi: usize,
    _buf: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: a `ColumnsMut` is a unique borrow of its values, like `&mut [f32]` (which is Send).
unsafe impl Send for ColumnsMut<'_> {}

impl<'a> ColumnsMut<'a> {
    /// Every column of `buf` seen as rows of `stride` values.
    ///
    /// # Panics
    /// If `stride` is 0 or does not divide `buf.len()`.
    pub fn new(buf: &'a mut [f32], stride: usize) -> Self {
        assert!(
            stride > 0 && buf.len() % stride == 0,
            "rows of {stride} values"
        );
        Self {
            ptr: buf.as_mut_ptr(),
            rows: buf.len() / stride,
            stride,
            lo: 0,
            hi: stride,
            _buf: std::marker::PhantomData,
        }
    }

    /// Columns `lo..mid` and `mid..hi`.
    ///
    /// # Panics
    /// If `mid` is outside `lo..=hi`.
    pub fn split_at(self, mid: usize) -> (Self, Self) {
        assert!(
            (self.lo..=self.hi).contains(&mid),
            "split inside the columns"
        );
        let left = Self { hi: mid, ..self };
        (left, Self { lo: mid, ..self })
    }

    /// The columns this view writes.
    pub fn columns(&self) -> std::ops::Range<usize> {
        self.lo..self.hi
    }

    /// Rows (channel planes).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row of the whole buffer (a plane's pixels).
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The first value of the whole buffer, for a kernel that writes this view's columns
    /// (and no other value) through pointer offsets `row * stride + column`.
    #[inline(always)]
    pub fn as_mut_ptr(&mut self) -> *mut f32 {
        self.ptr
    }

    /// Row `r`'s columns (`hi - lo` values).
    ///
    /// # Panics
    /// If `r >= rows`.
    #[inline(always)]
    pub fn row(&mut self, r: usize) -> &mut [f32] {
        assert!(r < self.rows, "row {r} of {}", self.rows);
        // SAFETY: `r * stride + hi <= rows * stride`, the borrowed buffer's length; no other
        // view split from the same buffer holds these columns, and `&mut self` keeps the
        // returned slice the only reference to them while it lives.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.add(r * self.stride + self.lo),
                self.hi - self.lo,
            )
        }
    }

    /// Rows `first..first + N`'s columns at once (`hi - lo` values each), for a kernel that
    /// writes several channels per pass.
    ///
    /// # Panics
    /// If `first + N > rows`.
    #[inline(always)]
    pub fn rows_mut<const N: usize>(&mut self, first: usize) -> [&mut [f32]; N] {
        assert!(
            first + N <= self.rows,
            "rows {first}..+{N} of {}",
            self.rows
        );
        let (ptr, stride, lo, len) = (self.ptr, self.stride, self.lo, self.hi - self.lo);
        // SAFETY: as in `row`: each `(first + i) * stride + hi <= rows * stride`; the rows
        // are distinct, so the N slices share no value, and `&mut self` keeps them the only
        // references to these columns while they live.
        std::array::from_fn(|i| unsafe {
            std::slice::from_raw_parts_mut(ptr.add((first + i) * stride + lo), len)
        })
    }
}

/// `acc[r][i] = sum_k w[k * R + r] * x[k * hw + j + i]` for one block of
/// [`POINTWISE_ROWS`] x 16 outputs: with AVX2 + FMA (checked at run time) in 8 registers
/// with fused multiply-adds, on aarch64 with NEON (`super::neon`, 16 registers), otherwise
/// in plain Rust.
#[inline(always)]
fn gemm_block(
    w: &[f32],
    x: &[f32],
    cin: usize,
    hw: usize,
    j: usize,
    acc: &mut [[f32; POINTWISE_COLS]; POINTWISE_ROWS],
) {
    const R: usize = POINTWISE_ROWS;
    const N: usize = POINTWISE_COLS;
    assert!(w.len() >= R * cin && j + N <= hw && x.len() >= cin * hw);
    #[cfg(target_arch = "aarch64")]
    {
        super::neon::gemm_block_neon(w, x, cin, hw, j, acc);
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA; the assertion above keeps every load in bounds.
        unsafe { gemm_block_avx2(w, x, cin, hw, j, acc) };
        return;
    }
    #[cfg(not(target_arch = "aarch64"))]
    gemm_block_scalar(w, x, cin, hw, j, acc);
}

/// [`gemm_block`] in plain Rust (the fallback, and the reference of the NEON block's test):
/// adds the products to `acc`.
#[inline(always)]
#[cfg_attr(target_arch = "aarch64", allow(dead_code))]
pub(super) fn gemm_block_scalar(
    w: &[f32],
    x: &[f32],
    cin: usize,
    hw: usize,
    j: usize,
    acc: &mut [[f32; POINTWISE_COLS]; POINTWISE_ROWS],
) {
    const R: usize = POINTWISE_ROWS;
    const N: usize = POINTWISE_COLS;
    for k in 0..cin {
        let xs: &[f32; N] = x[k * hw + j..k * hw + j + N].try_into().expect("block");
        let wk: &[f32; R] = w[k * R..k * R + R].try_into().expect("block");
        for r in 0..R {
            for i in 0..N {
                acc[r][i] += wk[r] * xs[i];
            }
        }
    }
}

/// Whether the CPU has AVX2 and FMA (cached by the standard library's detection).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// [`gemm_block`] with AVX2 + FMA: 4 rows x 2 registers of accumulators, one broadcast
/// weight per row and input channel.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `w` must hold `4 * cin` values, `x` `cin * hw`, and
/// `j + 16 <= hw`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_block_avx2(
    w: &[f32],
    x: &[f32],
    cin: usize,
    hw: usize,
    j: usize,
    acc: &mut [[f32; POINTWISE_COLS]; POINTWISE_ROWS],
) {
    use std::arch::x86_64::*;
    let mut a = [_mm256_setzero_ps(); 8];
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    for k in 0..cin {
        // SAFETY: k * hw + j + 16 <= cin * hw and 4 * k + 4 <= 4 * cin (the caller's bounds).
        unsafe {
            let row = xp.add(k * hw + j);
            let (x0, x1) = (_mm256_loadu_ps(row), _mm256_loadu_ps(row.add(8)));
            for r in 0..4 {
                let wr = _mm256_broadcast_ss(&*wp.add(4 * k + r));
                a[2 * r] = _mm256_fmadd_ps(wr, x0, a[2 * r]);
                a[2 * r + 1] = _mm256_fmadd_ps(wr, x1, a[2 * r + 1]);
            }
        }
    }
    for (r, out) in acc.iter_mut().enumerate() {
        // SAFETY: each row holds 16 values.
        unsafe {
            _mm256_storeu_ps(out.as_mut_ptr(), a[2 * r]);
            _mm256_storeu_ps(out.as_mut_ptr().add(8), a[2 * r + 1]);
        }
    }
}

/// [`pointwise_gemm_columns`] over every whole block of 16 pixels of `out.columns()` with
/// AVX2 + FMA, for the activations other than the sigmoid; returns the first pixel not done.
/// Per block of 4 output rows x 16 pixels the sums stay in 8 registers across all `cin`
/// inputs (one broadcast weight per row and input), and the bias, the activation and the
/// residual are applied in registers before the one store to `out`: the same operations, in
/// the same order, as the generic path's `acc` array, [`Activation::apply_slice`] and the
/// residual loop, so the same values (no multiply-add is contracted in the epilogue).
/// With a nonempty `panel` (`cin * 16` values, the caller's), each 16-pixel input block is
/// first copied into it, a contiguous panel (see [`pointwise_gemm`]); empty: read in place.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `act` must not be [`Activation::Sigmoid`]; `x` must hold
/// `cin * hw` values, `packed` `bias.len() * cin` (a multiple of 4 rows), `residual`
/// `bias.len() * hw`; `out` must have at least `bias.len()` rows of `hw` values; `panel`
/// must be empty or hold `cin * 16` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn pointwise_avx2(
    packed: &[f32],
    bias: &[f32],
    act: Activation,
    x: &[f32],
    cin: usize,
    hw: usize,
    residual: Option<&[f32]>,
    out: &mut ColumnsMut,
    panel: &mut [f32],
) -> usize {
    use std::arch::x86_64::*;
    const R: usize = POINTWISE_ROWS;
    const N: usize = POINTWISE_COLS;
    let blocks = bias.len() / R;
    let packs = !panel.is_empty();
    let (zero, three, six) = (
        _mm256_setzero_ps(),
        _mm256_set1_ps(3.0),
        _mm256_set1_ps(6.0),
    );
    let sixth = _mm256_set1_ps(1.0 / 6.0);
    let (wp, op) = (packed.as_ptr(), out.as_mut_ptr());
    let cols = out.columns();
    let rp = residual.map(<[f32]>::as_ptr);
    let mut j = cols.start;
    while j + N <= cols.end {
        // The input block: rows `stride` apart from `src`.
        let (src, stride) = if packs {
            for (k, dst) in panel.chunks_exact_mut(N).enumerate() {
                dst.copy_from_slice(&x[k * hw + j..k * hw + j + N]);
            }
            (panel.as_ptr(), N)
        } else {
            // SAFETY: j < hw, inside `x`.
            (unsafe { x.as_ptr().add(j) }, hw)
        };
        for b in 0..blocks {
            let mut a = [zero; 8];
            // SAFETY: the caller's bounds: row k of the block is at `k * stride` from `src`
            // with 16 values, the block's weights are `4 * cin` values from `b * 4 * cin`,
            // and output (and residual) row `b * 4 + r` holds `hw` values from its start;
            // the output's `j..j + 16` lie in `out`'s columns, which no other thread writes.
            unsafe {
                let w = wp.add(b * R * cin);
                for k in 0..cin {
                    let row = src.add(k * stride);
                    let (x0, x1) = (_mm256_loadu_ps(row), _mm256_loadu_ps(row.add(8)));
                    for r in 0..R {
                        let wr = _mm256_broadcast_ss(&*w.add(R * k + r));
                        a[2 * r] = _mm256_fmadd_ps(wr, x0, a[2 * r]);
                        a[2 * r + 1] = _mm256_fmadd_ps(wr, x1, a[2 * r + 1]);
                    }
                }
                for r in 0..R {
                    let bv = _mm256_set1_ps(bias[b * R + r]);
                    let o = (b * R + r) * hw + j;
                    for half in 0..2 {
                        let mut v = _mm256_add_ps(a[2 * r + half], bv);
                        v = match act {
                            Activation::Relu => _mm256_max_ps(v, zero),
                            Activation::HardSwish => {
                                let t = _mm256_min_ps(
                                    _mm256_max_ps(_mm256_add_ps(v, three), zero),
                                    six,
                                );
                                _mm256_mul_ps(_mm256_mul_ps(v, t), sixth)
                            }
                            _ => v,
                        };
                        if let Some(rp) = rp {
                            v = _mm256_add_ps(v, _mm256_loadu_ps(rp.add(o + 8 * half)));
                        }
                        _mm256_storeu_ps(op.add(o + 8 * half), v);
                    }
                }
            }
        }
        j += N;
    }
    j
}

impl TransposedConv2x2Sigmoid {
    /// Output rows `2 * first .. 2 * (first + n)` (`out` holds `n` pairs of output rows,
    /// `2 * n * 2w` values) from input rows `first..first + n` of `input` `[C, h, w]`, `C`
    /// being the channels of the weights. `acc` is scratch of at least `4w` values.
    /// Call under [`simd`].
    #[inline(always)]
    pub fn run_rows(
        &self,
        input: &[f32],
        h: usize,
        w: usize,
        first: usize,
        out: &mut [f32],
        acc: &mut [f32],
    ) {
        if fused_multiply_add() {
            self.rows_with::<Fused>(input, h, w, first, out, acc);
        } else {
            self.rows_with::<Separate>(input, h, w, first, out, acc);
        }
    }

    #[inline(always)]
    fn rows_with<M: MulAdd>(
        &self,
        input: &[f32],
        h: usize,
        w: usize,
        first: usize,
        out: &mut [f32],
        acc: &mut [f32],
    ) {
        let (plane, c) = (h * w, self.weight.len() / 4);
        let acc = &mut acc[..4 * w];
        let ow = 2 * w;
        for (i, pair) in out.chunks_exact_mut(2 * ow).enumerate() {
            let y = first + i;
            acc.fill(self.bias);
            for ch in 0..c {
                let src = &input[ch * plane + y * w..ch * plane + (y + 1) * w];
                for (j, a) in acc.chunks_exact_mut(w).enumerate() {
                    let t = self.weight[4 * ch + j];
                    for (o, &v) in a.iter_mut().zip(src) {
                        *o = M::mul_add(t, v, *o);
                    }
                }
            }
            // Interleave: accumulator j is output offset (j / 2, j % 2) of each 2x2 block.
            let (top, bottom) = pair.split_at_mut(ow);
            let (a01, a23) = acc.split_at(2 * w);
            for (row, a) in [(top, a01), (bottom, a23)] {
                let (left, right) = a.split_at(w);
                for ((o, &l), &r) in row.chunks_exact_mut(2).zip(left).zip(right) {
                    o[0] = l;
                    o[1] = r;
                }
            }
            Activation::Sigmoid.apply_slice(pair, 0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn exp_poly_is_within_2_ulp_of_libm() {
        let mut worst = 0i64;
        for i in 0..=1_750_000 {
            let x = -87.0 + i as f32 * 1e-4;
            let (a, b) = (exp_poly(x), x.exp());
            let ulp = (a.to_bits() as i64 - b.to_bits() as i64).abs();
            worst = worst.max(ulp);
        }
        assert!(worst <= 2, "{worst} ulp");
        // The sigmoid saturates beyond the clamp (0, or 1) instead of making NaN.
        let mut v = [-1000.0, -90.0, 0.0, 90.0, 1000.0];
        Activation::Sigmoid.apply_slice(&mut v, 0.0);
        assert_eq!(v, [0.0, 0.0, 0.5, 1.0, 1.0]);
    }

    /// The vectorised sigmoid gives no subnormal value anywhere (0 from -87 down, where the
    /// exact value is under 1.6e-38) and is within 1e-6 relative of `1 / (1 + e^-x)` above, as
    /// is the one-value form.
    #[test]
    fn sigmoid_gives_no_subnormals() {
        let x: Vec<f32> = (0..=240_000).map(|i| -120.0 + i as f32 * 1e-3).collect();
        let mut v = x.clone();
        Activation::Sigmoid.apply_slice(&mut v, 0.0);
        for (&x, &s) in x.iter().zip(&v) {
            assert!(!s.is_subnormal(), "sigmoid({x}) = {s:e}");
            assert!(!Activation::Sigmoid.apply(x).is_subnormal(), "apply({x})");
            let exact = 1.0 / (1.0 + (-(x as f64)).exp());
            if x >= -SIGMOID_ZERO_ABOVE {
                let rel = (s as f64 - exact).abs() / exact;
                assert!(rel < 1e-6, "sigmoid({x}) = {s:e}, exact {exact:e}");
            } else {
                assert!(s == 0.0 && exact < 1.7e-38, "sigmoid({x}) = {s:e}");
            }
        }
    }

    /// The 1x1 kernel (register blocks with bias, activation and residual in the epilogue)
    /// equals its definition: per output value the products summed in input
    /// order (one rounding per multiply-add where the CPU fuses them, as the kernel does),
    /// then the bias, the activation and the residual. Both layouts of the input block (the
    /// copied panel at 1024 pixels, in place at 1040) and every activation (applied with
    /// `apply_slice`, whose vectorised exponential the kernels use).
    #[test]
    fn pointwise_gemm_equals_its_definition() {
        for &(cin, cout, hw) in &[(16, 8, 1024), (24, 12, 1040), (3, 4, 16)] {
            let x: Vec<f32> = (0..cin * hw)
                .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
                .collect();
            let weight: Vec<f32> = (0..cout * cin)
                .map(|i| ((i * 13 % 29) as f32 / 14.0) - 1.0)
                .collect();
            let bias: Vec<f32> = (0..cout).map(|o| o as f32 * 0.37 - 1.3).collect();
            let res: Vec<f32> = (0..cout * hw).map(|i| (i % 11) as f32 * 0.1).collect();
            let mut packed = Vec::new();
            pack_pointwise(&weight, cout, cin, None, None, &mut packed);
            for act in [
                Activation::None,
                Activation::Relu,
                Activation::HardSwish,
                Activation::Sigmoid,
            ] {
                for residual in [None, Some(&res[..])] {
                    let mut got = vec![0f32; cout * hw];
                    let mut want = vec![0f32; cout * hw];
                    simd(
                        #[inline(always)]
                        || {
                            pointwise_gemm(&packed, &bias, act, &x, cin, hw, residual, &mut got);
                            for o in 0..cout {
                                for j in 0..hw {
                                    let mut z = 0f32;
                                    for k in 0..cin {
                                        let (w, v) = (weight[o * cin + k], x[k * hw + j]);
                                        z = if fused_multiply_add() {
                                            w.mul_add(v, z)
                                        } else {
                                            z + w * v
                                        };
                                    }
                                    let r = residual.map_or(0.0, |r| r[o * hw + j]);
                                    let mut v = [z];
                                    act.apply_slice(&mut v, bias[o]);
                                    want[o * hw + j] = v[0] + r;
                                }
                            }
                        },
                    );
                    // Equal values: the same bits, or zeros of either sign (the hard-swish
                    // of an input below -3 is -0 in the kernels and may be +0 in scalar code).
                    let bad = got.iter().zip(&want).position(|(a, b)| a != b);
                    assert!(
                        bad.is_none(),
                        "{cin}->{cout} x {hw}, {act:?}, residual {}: {:?}",
                        residual.is_some(),
                        bad.map(|i| (i, got[i], want[i]))
                    );
                    // Split by pixels at a multiple of 16 (as two threads run it): the same
                    // bits as the whole product, the tail pixels included (1040 = 65 x 16).
                    for mid in [0, 16, hw / 32 * 16, hw / 16 * 16, hw] {
                        let mut halves = vec![f32::NAN; cout * hw];
                        let (mut a, mut b) = ColumnsMut::new(&mut halves, hw).split_at(mid.min(hw));
                        simd(
                            #[inline(always)]
                            || {
                                for part in [&mut b, &mut a] {
                                    pointwise_gemm_columns(
                                        &packed, &bias, act, &x, cin, hw, residual, part,
                                    );
                                }
                            },
                        );
                        let same = got
                            .iter()
                            .zip(&halves)
                            .all(|(p, q)| p.to_bits() == q.to_bits());
                        assert!(same, "{cin}->{cout} x {hw}, {act:?}, split at {mid}");
                    }
                }
            }
        }
    }

    #[test]
    fn same_padding_matches_tensorflow() {
        // Figures from SOURCE.md: stride 2 on even sizes pads bottom/right only.
        assert_eq!(same_padding(144, 3, 2), (0, 1));
        assert_eq!(same_padding(18, 5, 2), (1, 2));
        assert_eq!(same_padding(9, 5, 1), (2, 2));
        assert_eq!(same_padding(9, 3, 1), (1, 1));
        // Odd input with stride 2: ceil(9/2) = 5 outputs, (5-1)*2+3-9 = 2 -> (1, 1).
        assert_eq!(same_padding(9, 3, 2), (1, 1));
    }

    /// `run_channels` zeroes the layout once per call and then rewrites only each plane's
    /// interior: split at any channel, its two parts must equal `run_plane` per channel bit
    /// for bit, also when the scratch holds another layer's values (nonzero where this
    /// layer's padding lies) or has another layer's length.
    #[test]
    fn run_channels_equals_run_plane_at_every_split_with_a_dirty_scratch() {
        for &(k, s, h, w) in &[(3, 1, 7, 9), (3, 2, 8, 10), (5, 2, 9, 16), (5, 1, 6, 5)] {
            let c = 4;
            let x: Vec<f32> = (0..c * h * w)
                .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
                .collect();
            let op = DepthwiseConv {
                weight: (0..c * k * k)
                    .map(|i| ((i * 13 % 29) as f32 / 14.0) - 1.0)
                    .collect(),
                bias: vec![0.1, -0.2, 0.3, 0.05],
                kernel: k,
                stride: s,
                activation: Activation::Relu,
                residual: s == 1,
            };
            let (oh, ow) = op.output_size(h, w);
            let mut one = vec![0f32; c * oh * ow];
            let mut scratch = Vec::new();
            for (ch, o) in one.chunks_exact_mut(oh * ow).enumerate() {
                op.run_plane(ch, &x[ch * h * w..(ch + 1) * h * w], h, w, o, &mut scratch);
            }
            // The same length as this layer's layout, full of non-zeros; then a shorter one.
            for mid in 0..=c {
                for dirty in [vec![7.5f32; scratch.len()], vec![7.5f32; 3]] {
                    let mut scratch = dirty;
                    let mut all = vec![f32::NAN; c * oh * ow];
                    // Channels mid.. first (as the second thread runs its part), then 0..mid.
                    let (first, second) = all.split_at_mut(mid * oh * ow);
                    op.run_channels(mid, &x, h, w, second, &mut scratch);
                    op.run_channels(0, &x, h, w, first, &mut scratch);
                    let same = one
                        .iter()
                        .zip(&all)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "k {k} s {s} split {mid}: {one:?} != {all:?}");
                }
            }
        }
    }

    /// The stem's grouped path ([`DenseConv::stem_group`]: 4 output channels per input
    /// load) must give the bits of the one-channel-at-a-time accumulation (the custom op's
    /// path), for whole groups and the channels left over and a partial block of columns,
    /// split by rows as the two threads run it ([`DenseConv::run_rows`]), each part from a
    /// layout of its own that holds only the input rows [`DenseConv::prepare_rows`] laid
    /// out for it (every other row NaN, so a part that read one would fail).
    #[test]
    fn stem_groups_equal_one_channel_at_a_time() -> Result<()> {
        let (cin, cout, h, w) = (3, 7, 9, 37);
        let op = DenseConv {
            weight: (0..cout * cin * 9)
                .map(|i| ((i * 13 % 29) as f32 / 14.0) - 1.0)
                .collect(),
            bias: (0..cout).map(|i| i as f32 * 0.1 - 0.3).collect(),
            cin,
            kernel: 3,
            stride: 2,
            activation: Activation::HardSwish,
        };
        let x: Vec<f32> = (0..cin * h * w)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let reference = Tensor::from_vec(x.clone(), (1, cin, h, w), &Device::Cpu)?
            .apply_op1_no_bwd(&op)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
        let nan = vec![f32::NAN; x.len()];
        for cut in [0, 2, 3, oh] {
            let mut ours = vec![f32::NAN; cout * oh * ow];
            let (mut top, mut bottom) = ColumnsMut::new(&mut ours, oh * ow).split_at(cut * ow);
            let (mut mine, mut theirs) = (vec![Vec::new(); cin], vec![Vec::new(); cin]);
            // Under `simd`, as the network calls it and as the custom op runs: outside it a
            // multiply-add is a call to the C library's `fmaf`, which in the Windows build
            // under Wine gave other bits than the FMA instruction.
            simd(
                #[inline(always)]
                || {
                    for (bufs, part, rows) in [
                        (&mut mine, &mut top, 0..cut),
                        (&mut theirs, &mut bottom, cut..oh),
                    ] {
                        op.prepare_rows(&nan, (h, w), bufs, false, 0..oh);
                        op.prepare_rows(&x, (h, w), bufs, true, rows);
                        op.run_rows(bufs, h, w, part);
                    }
                },
            );
            let differ = ours
                .iter()
                .zip(&reference)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(differ, 0, "split at output row {cut}, of {}", ours.len());
        }
        Ok(())
    }

    /// [`Upsample2x::plane_rows`] over any split of the output rows (odd and even bounds, a
    /// single row, the edges) gives the bits of [`Upsample2x::plane`].
    #[test]
    fn upsampled_rows_equal_the_whole_plane() {
        for (h, w) in [(5, 7), (1, 3), (9, 16)] {
            let input: Vec<f32> = (0..h * w)
                .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
                .collect();
            let ow = 2 * w;
            let mut whole = vec![f32::NAN; 4 * h * w];
            let mut scratch = Vec::new();
            Upsample2x::plane(&input, h, w, &mut whole, &mut scratch);
            for cut in [0, 1, 2, h, 2 * h - 1, 2 * h] {
                let mut parts = vec![f32::NAN; 4 * h * w];
                let (top, bottom) = parts.split_at_mut(cut * ow);
                let mut scratch = vec![0.0; Upsample2x::rows_scratch(2 * h, w)];
                Upsample2x::plane_rows(&input, (h, w), 0..cut, top, &mut scratch);
                Upsample2x::plane_rows(&input, (h, w), cut..2 * h, bottom, &mut scratch);
                let differ = parts
                    .iter()
                    .zip(&whole)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                assert_eq!(differ, 0, "{w}x{h} cut at row {cut}");
            }
        }
    }

    /// The custom kernel must equal candle's grouped conv2d on explicitly padded input.
    #[test]
    fn depthwise_matches_grouped_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        for &(k, s, h, w) in &[(3, 1, 7, 9), (3, 2, 8, 10), (5, 2, 9, 16), (5, 1, 6, 5)] {
            let c = 3;
            let x: Vec<f32> = (0..c * h * w)
                .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
                .collect();
            let wt: Vec<f32> = (0..c * k * k)
                .map(|i| ((i * 13 % 29) as f32 / 14.0) - 1.0)
                .collect();
            let bias = vec![0.1, -0.2, 0.3];
            let op = DepthwiseConv {
                weight: wt.clone(),
                bias: bias.clone(),
                kernel: k,
                stride: s,
                activation: Activation::None,
                residual: false,
            };
            let xt = Tensor::from_vec(x, (1, c, h, w), &dev)?;
            let ours = xt.apply_op1_no_bwd(&op)?;
            let (pt, pb) = same_padding(h, k, s);
            let (pl, pr) = same_padding(w, k, s);
            let padded = xt.pad_with_zeros(2, pt, pb)?.pad_with_zeros(3, pl, pr)?;
            let wt = Tensor::from_vec(wt, (c, 1, k, k), &dev)?;
            let reference = padded
                .conv2d(&wt, 0, s, 1, c)?
                .broadcast_add(&Tensor::from_vec(bias, (1, c, 1, 1), &dev)?)?;
            assert_eq!(ours.dims(), reference.dims(), "k={k} s={s} {h}x{w}");
            let diff = (ours - reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "k={k} s={s} {h}x{w}: max diff {diff}");
        }
        Ok(())
    }

    #[test]
    fn activations_match_their_definitions() {
        assert_eq!(Activation::Relu.apply(-2.0), 0.0);
        assert_eq!(Activation::HardSwish.apply(-3.5), 0.0);
        assert_eq!(Activation::HardSwish.apply(4.0), 4.0);
        assert!((Activation::HardSwish.apply(1.0) - 4.0 / 6.0).abs() < 1e-7);
        assert!((Activation::Sigmoid.apply(0.0) - 0.5).abs() < 1e-7);
    }
}
