//! The fused CPU network on plain slices: what [`super::Kernels::Cpu`] runs.
//!
//! The same function as [`super::net`] (and the same exact rewrites, listed there), computed
//! layer by layer into buffers that a [`Workspace`] keeps between frames, so a warm frame
//! allocates nothing (`tests/no_alloc.rs` counts). With two threads every layer is split in
//! two parts between the calling thread and a persistent [`Helper`]: the stem, the 1x1
//! layers, the decoder's merges and the last stage by rows ([`split_pixels`]), the depthwise
//! layers by channels ([`depthwise`]), the larger channel means by channels; the small
//! sequential steps (the squeeze-excite gates' FCs, the gate-scaled weights) stay on the
//! caller.
//!
//! Tensors are NCHW with batch size 1, stored as `[C, H*W]` slices.

use super::helper::Helper;
use super::kernels::{
    pack_pointwise, pointwise_gemm, pointwise_gemm_columns, Activation, ColumnsMut, DenseConv,
    DepthwiseConv, TransposedConv2x2Sigmoid, Upsample2x, POINTWISE_COLS, POINTWISE_ROWS,
};
use super::net::{BlockConfig, BLOCKS};
use crate::simd::simd;
use candle_core::{bail, Result};
use candle_nn::VarBuilder;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Reads a tensor of `shape` as `f32` values.
fn get(vb: &VarBuilder, shape: &[usize], name: &str) -> Result<Vec<f32>> {
    vb.get(shape, name)?.flatten_all()?.to_vec1::<f32>()
}

/// A 1x1 convolution: row-major `[cout, cin]` weights, the same packed for
/// [`pointwise_gemm`], bias and activation.
#[derive(Clone, Debug)]
struct Pw {
    weight: Vec<f32>,
    packed: Vec<f32>,
    bias: Vec<f32>,
    cin: usize,
    act: Activation,
}

impl Pw {
    fn new(cin: usize, cout: usize, act: Activation, vb: VarBuilder) -> Result<Self> {
        if cout % POINTWISE_ROWS != 0 {
            bail!("1x1 layers need a multiple of {POINTWISE_ROWS} outputs, got {cout}");
        }
        let weight = get(&vb, &[cout, cin, 1, 1], "weight")?;
        let mut packed = Vec::new();
        pack_pointwise(&weight, cout, cin, None, None, &mut packed);
        Ok(Self {
            weight,
            packed,
            bias: get(&vb, &[cout], "bias")?,
            cin,
            act,
        })
    }

    fn cout(&self) -> usize {
        self.bias.len()
    }
}

/// A fully connected layer on one pixel, as the gates use on channel means: a 1x1
/// convolution's `[cout, cin]` weights kept transposed (`[cin, cout]`), bias and activation.
#[derive(Clone, Debug)]
struct Fc {
    transposed: Vec<f32>,
    bias: Vec<f32>,
    cin: usize,
    act: Activation,
}

impl Fc {
    fn new(cin: usize, cout: usize, act: Activation, vb: VarBuilder) -> Result<Self> {
        let weight = get(&vb, &[cout, cin, 1, 1], "weight")?;
        let transposed = (0..cin * cout)
            .map(|i| weight[(i % cout) * cin + i / cout])
            .collect();
        Ok(Self {
            transposed,
            bias: get(&vb, &[cout], "bias")?,
            cin,
            act,
        })
    }

    fn cout(&self) -> usize {
        self.bias.len()
    }

    /// `x` `[cin]` -> `out` `[cout]`.
    ///
    /// Each output's dot product is summed in input order, as `row.iter().zip(x).map(|(w,
    /// v)| w * v).sum()` would (a multiply then an add, never fused), but all outputs advance
    /// together, one input at a time over the transposed weights: independent sums in
    /// vector lanes instead of one long chain of dependent adds per output (the gates' FCs
    /// were about 37 µs of a landscape frame that way, `tools/hand-off-timers.patch`). The
    /// same bits as the row-by-row sum.
    fn apply_vec(&self, x: &[f32], out: &mut [f32]) {
        let cout = self.bias.len();
        let out = &mut out[..cout];
        let (wt, x) = (&self.transposed[..self.cin * cout], &x[..self.cin]);
        simd(
            #[inline(always)]
            || {
                // The sum starts from the first product: `-0.0 + p == p`, as `Sum` starts.
                for (o, &w) in out.iter_mut().zip(&wt[..cout]) {
                    *o = w * x[0];
                }
                for (row, &v) in wt.chunks_exact(cout).zip(x).skip(1) {
                    for (o, &w) in out.iter_mut().zip(row) {
                        *o += w * v;
                    }
                }
            },
        );
        for (o, &b) in out.iter_mut().zip(&self.bias) {
            *o = self.act.apply(*o + b);
        }
    }
}

/// Squeeze-and-excitation (Hu et al., 2018): 1x1 reduce + ReLU, 1x1 expand + sigmoid, on
/// channel means.
#[derive(Clone, Debug)]
struct Gate {
    reduce: Fc,
    expand: Fc,
}

impl Gate {
    fn new(c: usize, reduced: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            reduce: Fc::new(c, reduced, Activation::Relu, vb.pp("reduce"))?,
            expand: Fc::new(reduced, c, Activation::Sigmoid, vb.pp("expand"))?,
        })
    }

    /// `means` `[c]` -> `gate` `[c]` (0..1); `mid` is scratch.
    fn apply(&self, means: &[f32], mid: &mut Vec<f32>, gate: &mut Vec<f32>) {
        fit(mid, self.reduce.cout());
        fit(gate, self.expand.cout());
        self.reduce.apply_vec(means, mid);
        self.expand.apply_vec(mid, gate);
    }
}

#[derive(Clone, Debug)]
struct Block {
    cfg: BlockConfig,
    expand: Pw,
    dw: DepthwiseConv,
    se: Option<Gate>,
    project: Pw,
}

#[derive(Clone, Debug)]
struct Stage {
    proj: Pw,
    gate: Gate,
    conv: Pw,
    dw: DepthwiseConv,
}

/// Buffers one forward pass uses besides the skip connections; all reused.
#[derive(Default)]
struct Temps {
    exp: Vec<f32>,
    dwo: Vec<f32>,
    up: Vec<f32>,
    means: Vec<f32>,
    other_means: Vec<f32>,
    mid: Vec<f32>,
    gate: Vec<f32>,
    packed: Vec<f32>,
    bias: Vec<f32>,
    /// The stem's input laid out, one copy per thread (each lays out the rows it reads).
    stem: [StemLayout; 2],
    /// Per-thread plane scratch.
    scratch: [Vec<f32>; 2],
    helper: Option<Helper>,
}

/// The three input planes laid out for the stem ([`DenseConv::prepare_rows`]) by one thread.
#[derive(Default)]
struct StemLayout {
    planes: [Vec<f32>; 3],
    /// The input size (`h`, `w`) whose layout `planes` hold (their zero padding), (0, 0)
    /// before the first frame.
    size: (usize, usize),
}

/// Everything a forward pass writes, kept between frames so a warm frame allocates nothing.
/// One per concurrent caller; [`FusedNet`] keeps a pool of them.
#[derive(Default)]
pub struct Workspace {
    s2: Vec<f32>,
    s4: Vec<f32>,
    s8: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    t: Temps,
}

impl Workspace {
    /// Threads this workspace runs the network on: 1, or 2 with its helper thread.
    pub fn threads(&self) -> usize {
        1 + usize::from(self.t.helper.is_some())
    }

    /// Starts or stops the helper thread for `threads` (1 or 2; more count as 2).
    ///
    /// # Errors
    /// When the helper thread cannot be started.
    pub fn set_threads(&mut self, threads: usize) -> Result<()> {
        match (threads >= 2, self.t.helper.is_some()) {
            (true, false) => self.t.helper = Some(Helper::spawn()?),
            (false, true) => self.t.helper = None,
            _ => {}
        }
        Ok(())
    }
}

/// Rows per band of the last decoder stage ([`FusedNet::last_stage`]) at 1/2 size: for a
/// landscape frame a band's buffers (16 channels x 10 rows x 128 values, four of them, about
/// 300 KB) stay in a core's L2 cache (1 MB on this VM's EPYC).
const BAND: usize = 8;

/// Grows `v` to at least `n` values (allocating only the first time) and returns the first
/// `n`.
#[inline]
fn fit(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// `h.join(a, b)` with each side under [`simd`], so both threads run their half compiled for
/// the CPU's instruction set (the closures passed are `#[inline(always)]`).
#[inline(always)]
fn join_simd(h: &mut Helper, a: impl FnOnce(), b: impl FnOnce() + Send) {
    h.join(
        #[inline(always)]
        || simd(a),
        #[inline(always)]
        || simd(b),
    )
}

/// Runs `f(first, part, scratch)` over `items` equal parts of `out` (`per` values each), on
/// the calling thread alone, or split in two at a multiple of `align` items with the helper
/// taking the second half. `first` is the index of the part's first item.
#[inline(always)]
fn split2<F>(
    helper: &mut Option<Helper>,
    scratch: &mut [Vec<f32>; 2],
    out: &mut [f32],
    per: usize,
    align: usize,
    f: F,
) where
    F: Fn(usize, &mut [f32], &mut Vec<f32>) + Sync,
{
    let items = out.len() / per.max(1);
    let [s0, s1] = scratch;
    match helper {
        Some(h) if items >= 2 * align => {
            let mid = (items / 2).div_ceil(align) * align;
            let (lo, hi) = out.split_at_mut(mid * per);
            let f = &f;
            join_simd(
                h,
                #[inline(always)]
                || f(0, lo, s0),
                #[inline(always)]
                || f(mid, hi, s1),
            );
        }
        _ => simd(
            #[inline(always)]
            || f(0, out, s0),
        ),
    }
}

/// Values (`c * hw`) from which [`channel_means`] splits the channels between the threads
/// (a pass of about 4 µs on the 2-core VM; below it a join, 1-2 µs, eats the gain). After the
/// stem's input layout the means are the largest pass outside the split layers: 71 µs of a
/// square frame's 0.19 ms there on one thread (`tools/hand-off-timers.patch`,
/// docs/devices.md), most of it in the planes at 1/2 and 1/4 size.
const SPLIT_MEANS: usize = 32_768;

/// The means of the planes (`hw` values each) of `x` from plane `first` on into `part`, one
/// per plane: eight running sums over the plane's blocks of 8, then their sum plus the
/// remainder's, over `hw`.
#[inline(always)]
fn plane_means(x: &[f32], hw: usize, first: usize, part: &mut [f32]) {
    for (m, plane) in part.iter_mut().zip(x[first * hw..].chunks_exact(hw)) {
        let mut acc = [0f32; 8];
        let chunks = plane.chunks_exact(8);
        let rest: f32 = chunks.remainder().iter().sum();
        for c in chunks {
            for i in 0..8 {
                acc[i] += c[i];
            }
        }
        *m = (acc.iter().sum::<f32>() + rest) / hw as f32;
    }
}

/// Per-channel means of `x` `[c, hw]` into `out` `[c]`, split by channels between the
/// threads when `x` holds at least [`SPLIT_MEANS`] values (same values either way: each
/// channel's sum runs in the same order).
fn channel_means(
    helper: &mut Option<Helper>,
    scratch: &mut [Vec<f32>; 2],
    x: &[f32],
    c: usize,
    hw: usize,
    out: &mut Vec<f32>,
) {
    let helper = if c * hw >= SPLIT_MEANS {
        helper
    } else {
        &mut None
    };
    split2(
        helper,
        scratch,
        fit(out, c),
        1,
        1,
        #[inline(always)]
        |first, part, _| plane_means(x, hw, first, part),
    );
}

/// The row at which a layer of `rows` rows of `w` pixels is split by pixels between the two
/// threads for the caller's share `share` (0..1, from [`Balance::share`]): the first row from
/// `share * rows` on (rounded up: at 0.5 the caller, which also posts the join, takes the
/// larger half) whose first pixel starts a 16-pixel block of [`pointwise_gemm_columns`]
/// (then both halves compute exactly what one thread does); `None` when there is none.
///
/// [`Balance::share`]: super::helper::Balance::share
fn split_row(rows: usize, w: usize, share: f64) -> Option<usize> {
    let first = ((rows as f64 * share).ceil() as usize).max(1);
    (first..rows).find(|r| r * w % POINTWISE_COLS == 0)
}

/// Runs `f(part, scratch)` over `out`, planes of `rows` rows of `w` pixels: on the calling
/// thread alone, or split by pixels at [`split_row`] with the helper taking the lower rows
/// of every plane. Every layer at one size splits at the same row within a frame (the
/// caller's share, [`Balance::share`], is fixed for the frame), so a layer reads mostly rows
/// its own core wrote where the layer before it split by rows too (a 1x1 layer split by
/// channels made each thread read every input plane, half of them from the other core's
/// cache: 1.34x the one-thread time, `tools/hand-off-timers.patch`). Each split's two times
/// go to [`Balance::record`].
///
/// [`Balance::share`]: super::helper::Balance::share
/// [`Balance::record`]: super::helper::Balance::record
#[inline(always)]
fn split_pixels<F>(
    helper: &mut Option<Helper>,
    scratch: &mut [Vec<f32>; 2],
    out: &mut [f32],
    (rows, w): (usize, usize),
    f: F,
) where
    F: Fn(&mut ColumnsMut, &mut Vec<f32>) + Sync,
{
    let [s0, s1] = scratch;
    split_pixels_with(helper, (s0, s1), out, (rows, w), f);
}

/// [`split_pixels`] with a state of each thread's own: `f(part, mine)` on the caller and
/// `f(part, theirs)` on the helper (`mine` alone on one thread).
#[inline(always)]
fn split_pixels_with<T, F>(
    helper: &mut Option<Helper>,
    (mine, theirs): (&mut T, &mut T),
    out: &mut [f32],
    (rows, w): (usize, usize),
    f: F,
) where
    T: Send,
    F: Fn(&mut ColumnsMut, &mut T) + Sync,
{
    let mut whole = ColumnsMut::new(out, rows * w);
    let split = helper
        .as_ref()
        .and_then(|h| split_row(rows, w, h.balance.share()));
    match (helper, split) {
        (Some(h), Some(mid)) => {
            let (mut lo, mut hi) = whole.split_at(mid * w);
            let f = &f;
            join_balanced(
                h,
                mid as f64 / rows as f64,
                #[inline(always)]
                || f(&mut lo, mine),
                #[inline(always)]
                || f(&mut hi, theirs),
            );
        }
        _ => simd(
            #[inline(always)]
            || f(&mut whole, mine),
        ),
    }
}

/// Runs `a` on the calling thread and `b` on the helper, each under [`simd`], and gives
/// [`Balance::record`] the caller's share of the work `share` (0..1) and the two sides' times.
///
/// [`Balance::record`]: super::helper::Balance::record
#[inline(always)]
fn join_balanced(h: &mut Helper, share: f64, a: impl FnOnce(), b: impl FnOnce() + Send) {
    let helper_ns = AtomicU64::new(0);
    let start = Instant::now();
    let caller = h.join(
        #[inline(always)]
        || {
            simd(a);
            start.elapsed()
        },
        #[inline(always)]
        || {
            simd(b);
            helper_ns.store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        },
    );
    h.balance.record(
        share,
        caller.as_nanos() as f64,
        helper_ns.into_inner() as f64,
    );
}

/// A 1x1 layer over `x` `[cin, h*w]` into `out` (`[cout, h*w]`), with the packed weights
/// given (the layer's own or gate-scaled ones), split between the threads by pixels.
#[allow(clippy::too_many_arguments)]
fn pointwise(
    helper: &mut Option<Helper>,
    scratch: &mut [Vec<f32>; 2],
    packed: &[f32],
    bias: &[f32],
    act: Activation,
    x: &[f32],
    cin: usize,
    size: (usize, usize),
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    let hw = size.0 * size.1;
    split_pixels(
        helper,
        scratch,
        &mut out[..bias.len() * hw],
        size,
        #[inline(always)]
        |part, _| pointwise_gemm_columns(packed, bias, act, x, cin, hw, residual, part),
    );
}

/// A depthwise layer over `x` `[c, h*w]` into `out` `[c, oh*ow]`, split between the threads
/// by channels at [`split_channel`]; with `means` (`[c]`), also the mean of every output
/// plane (the squeeze-excite gate's input), each thread averaging the planes it has
/// just written while they are in its cache.
///
/// By channels, not by rows as the 1x1 layers around it: each half of a split by rows laid
/// out its input rows again with the `k / 2` rows beyond the split and paid the per-channel
/// part of the kernel again (a third of a 9-row plane cost over 40 % of its time), while a
/// channel's plane is a few KB that the next 1x1 layer reads from the other core at little
/// cost. Two threads over one, landscape: 1.50-1.52x by rows, 1.63-1.67x by channels, in the
/// same runs (docs/devices.md, "Depthwise layers split by channels").
#[allow(clippy::too_many_arguments)]
fn depthwise(
    helper: &mut Option<Helper>,
    scratch: &mut [Vec<f32>; 2],
    op: &DepthwiseConv,
    x: &[f32],
    h: usize,
    w: usize,
    out: &mut [f32],
    means: Option<&mut [f32]>,
) {
    let (oh, ow) = op.output_size(h, w);
    let ohw = oh * ow;
    let channels = out.len() / ohw;
    /// One side's channels from `first` (a fn with `inline(always)`, so the kernels stay
    /// inside the caller's `simd` context).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn run(
        op: &DepthwiseConv,
        (x, h, w): (&[f32], usize, usize),
        first: usize,
        part: &mut [f32],
        means: Option<&mut [f32]>,
        scratch: &mut Vec<f32>,
    ) {
        op.run_channels(first, x, h, w, part, scratch);
        if let Some(means) = means {
            let (oh, ow) = op.output_size(h, w);
            plane_means(part, oh * ow, 0, means);
        }
    }
    let [s0, s1] = scratch;
    let split = helper
        .as_ref()
        .and_then(|h| split_channel(channels, h.balance.share()));
    match (helper, split) {
        (Some(hp), Some(mid)) => {
            let (lo, hi) = out.split_at_mut(mid * ohw);
            let (mlo, mhi) = match means {
                Some(m) => {
                    let (a, b) = m.split_at_mut(mid);
                    (Some(a), Some(b))
                }
                None => (None, None),
            };
            join_balanced(
                hp,
                mid as f64 / channels as f64,
                #[inline(always)]
                || run(op, (x, h, w), 0, lo, mlo, s0),
                #[inline(always)]
                || run(op, (x, h, w), mid, hi, mhi, s1),
            );
        }
        _ => simd(
            #[inline(always)]
            || run(op, (x, h, w), 0, out, means, s0),
        ),
    }
}

/// The channel at which a layer of `channels` planes is split between the two threads for
/// the caller's share `share` (0..1, from [`Balance::share`]), the caller taking the planes
/// before it (rounded up: at 0.5 the caller, which also posts the join, takes the larger
/// half); `None` when a half would be empty.
///
/// [`Balance::share`]: super::helper::Balance::share
fn split_channel(channels: usize, share: f64) -> Option<usize> {
    let mid = (channels as f64 * share).ceil() as usize;
    (1..channels).contains(&mid).then_some(mid)
}

/// The selfie-segmentation network on slices with reused buffers (see the module docs).
pub struct FusedNet {
    stem: DenseConv,
    blocks: Vec<Block>,
    head_conv: Pw,
    head_gate: Fc,
    decoder: [Stage; 3],
    output: TransposedConv2x2Sigmoid,
    /// Rows per band in [`FusedNet::last_stage`]: [`BAND`] (tests vary it).
    band: usize,
    pool: Mutex<Vec<Workspace>>,
}

impl std::fmt::Debug for FusedNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FusedNet")
    }
}

impl FusedNet {
    /// Builds the network from `vb` (keys as written by `tools/convert_tflite.py`, see
    /// [`super::net::SelfieSegmentation::new`]).
    ///
    /// # Errors
    /// When a weight is missing or has the wrong shape.
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let stem_vb = vb.pp("stem");
        let stem = DenseConv {
            weight: get(&stem_vb, &[16, 3, 3, 3], "weight")?,
            bias: get(&stem_vb, &[16], "bias")?,
            cin: 3,
            kernel: 3,
            stride: 2,
            activation: Activation::HardSwish,
        };
        let dw = |c: usize, k: usize, s: usize, act, residual, vb: VarBuilder| -> Result<_> {
            Ok(DepthwiseConv {
                weight: get(&vb, &[c, 1, k, k], "weight")?,
                bias: get(&vb, &[c], "bias")?,
                kernel: k,
                stride: s,
                activation: act,
                residual,
            })
        };
        let blocks = BLOCKS
            .iter()
            .enumerate()
            .map(|(i, cfg)| {
                let vb = vb.pp("blocks").pp(i);
                Ok(Block {
                    cfg: *cfg,
                    expand: Pw::new(cfg.cin, cfg.expanded, cfg.activation, vb.pp("expand"))?,
                    dw: dw(
                        cfg.expanded,
                        cfg.kernel,
                        cfg.stride,
                        cfg.activation,
                        false,
                        vb.pp("dw"),
                    )?,
                    se: match cfg.se {
                        Some(r) => Some(Gate::new(cfg.expanded, r, vb.pp("se"))?),
                        None => None,
                    },
                    project: Pw::new(cfg.expanded, cfg.cout, Activation::None, vb.pp("project"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let stage = |cin: usize, c: usize, vb: VarBuilder| -> Result<Stage> {
            Ok(Stage {
                proj: Pw::new(cin, c, Activation::None, vb.pp("proj"))?,
                gate: Gate::new(c, c, vb.pp("gate"))?,
                conv: Pw::new(c, c, Activation::Relu, vb.pp("conv"))?,
                dw: dw(c, 3, 1, Activation::Relu, true, vb.pp("dw"))?,
            })
        };
        let d = vb.pp("decoder");
        let f = vb.pp("final");
        let head = vb.pp("head");
        Ok(Self {
            stem,
            blocks,
            head_conv: Pw::new(32, 128, Activation::Relu, head.pp("conv"))?,
            head_gate: Fc::new(32, 128, Activation::Sigmoid, head.pp("gate"))?,
            decoder: [
                stage(128, 24, d.pp(0))?,
                stage(24, 16, d.pp(1))?,
                stage(16, 16, d.pp(2))?,
            ],
            output: TransposedConv2x2Sigmoid {
                weight: get(&f, &[16, 1, 2, 2], "weight")?,
                bias: get(&f, &[1], "bias")?[0],
            },
            band: BAND,
            pool: Mutex::new(Vec::new()),
        })
    }

    /// Runs the network on `input` NCHW `[1, 3, h, w]` RGB 0..1 into `output` `[1, 1, h, w]`
    /// (person probability 0..1) on `threads` threads (1, or 2 with a helper thread), with a
    /// workspace from the pool (a new one only when every pooled one is in use).
    ///
    /// # Errors
    /// When `h` and `w` are not multiples of 16 (four stride-2 layers), the slices do not hold `3hw` and `hw`
    /// values, or a helper thread cannot be started.
    pub fn run(
        &self,
        input: &[f32],
        output: &mut [f32],
        h: usize,
        w: usize,
        threads: usize,
    ) -> Result<()> {
        if h % 16 != 0 || w % 16 != 0 || h == 0 || w == 0 {
            bail!("the network needs sides that are multiples of 16, got {w}x{h}");
        }
        if input.len() != 3 * h * w || output.len() != h * w {
            bail!(
                "model input/output must hold {} and {} values, got {} and {}",
                3 * h * w,
                h * w,
                input.len(),
                output.len()
            );
        }
        let mut ws = {
            let mut pool = self.pool.lock();
            let want = threads.clamp(1, 2);
            match pool.iter().rposition(|ws| ws.threads() == want) {
                Some(i) => pool.swap_remove(i),
                None => pool.pop().unwrap_or_default(),
            }
        };
        ws.set_threads(threads)?;
        self.forward(&mut ws, input, output, h, w);
        self.pool.lock().push(ws);
        Ok(())
    }

    /// A hint that [`FusedNet::run`] on `threads` threads follows soon (within about 200 µs,
    /// the helper's spin): wakes the helper thread of the workspace that run will take, so
    /// the frame's first hand-off does not wait for it to wake from sleep. Does nothing for
    /// one thread or before the first two-thread run.
    pub fn wake(&self, threads: usize) {
        if threads < 2 {
            return;
        }
        let pool = self.pool.lock();
        if let Some(ws) = pool.iter().rev().find(|ws| ws.threads() == 2) {
            if let Some(h) = &ws.t.helper {
                h.wake();
            }
        }
    }

    fn forward(&self, ws: &mut Workspace, input: &[f32], output: &mut [f32], h: usize, w: usize) {
        let Workspace {
            s2,
            s4,
            s8,
            a,
            b,
            t,
        } = ws;
        if let Some(h) = &mut t.helper {
            h.balance.next_frame();
        }
        // Stem: 1/2, 16 channels, split by rows as block 0's expansion next is (at the same
        // row): each thread lays out the input rows its own rows read into a copy of its
        // own and writes the 16 planes at those rows, so neither reads a value the other
        // core wrote until block 0's depthwise layer (its halo rows). (Split by channels,
        // each thread had read half of every row it needed from the other core. Two
        // threads over one: 1.46x against 1.30x in eight alternated runs on the 2-core VM,
        // no difference in later ones on a busier host; docs/devices.md.)
        let (h2, w2) = (h / 2, w / 2);
        {
            let Temps { stem, helper, .. } = t;
            let stem_op = &self.stem;
            let [mine, theirs] = stem;
            split_pixels_with(
                helper,
                (mine, theirs),
                fit(s2, 16 * h2 * w2),
                (h2, w2),
                #[inline(always)]
                |part, layout| {
                    let cols = part.columns();
                    let same = layout.size == (h, w);
                    stem_op.prepare_rows(
                        input,
                        (h, w),
                        &mut layout.planes,
                        same,
                        cols.start / w2..cols.end / w2,
                    );
                    layout.size = (h, w);
                    stem_op.run_rows(&layout.planes, h, w, part);
                },
            );
        }
        let (mut ch, mut cw) = (h2, w2);
        // Encoder: blocks[0] -> s4 (1/4, 16), [1] -> a, [2] -> s8 (1/8, 24), [3..] ping-pong.
        (ch, cw) = self.block(&self.blocks[0], &s2[..16 * h2 * w2], ch, cw, s4, t);
        let s4_len = 16 * ch * cw;
        (ch, cw) = self.block(&self.blocks[1], &s4[..s4_len], ch, cw, a, t);
        (ch, cw) = self.block(&self.blocks[2], &a[..24 * ch * cw], ch, cw, s8, t);
        let s8_len = 24 * ch * cw;
        // Blocks 3.. alternate between `a` and `b`; `in_a` says where the last output is.
        let mut in_a = false;
        for (i, blk) in self.blocks[3..].iter().enumerate() {
            let n = blk.cfg.cin * ch * cw;
            (ch, cw) = if i == 0 {
                self.block(blk, &s8[..s8_len], ch, cw, a, t)
            } else if in_a {
                self.block(blk, &a[..n], ch, cw, b, t)
            } else {
                self.block(blk, &b[..n], ch, cw, a, t)
            };
            in_a = i == 0 || !in_a;
        }
        let (cur, nxt) = if in_a { (a, b) } else { (b, a) };
        let src: &[f32] = &cur[..32 * ch * cw];
        // Head: 1/16, 128 channels, gated by sigmoid(gate(mean(x))) folded into the rows.
        let hw = ch * cw;
        {
            let Temps {
                means,
                gate,
                packed,
                bias,
                scratch,
                helper,
                ..
            } = t;
            channel_means(helper, scratch, src, 32, hw, means);
            self.head_gate.apply_vec(&means[..32], fit(gate, 128));
            let hc = &self.head_conv;
            pack_pointwise(&hc.weight, 128, 32, Some(&gate[..128]), None, packed);
            let b = fit(bias, 128);
            for ((o, &v), &g) in b.iter_mut().zip(&hc.bias).zip(gate.iter()) {
                *o = v * g;
            }
            pointwise(
                helper,
                scratch,
                packed,
                b,
                hc.act,
                src,
                32,
                (ch, cw),
                None,
                fit(nxt, 128 * hw),
            );
        }
        // Decoder: 1/8 (24), 1/4 (16), 1/2 (16).
        let (x, y) = (nxt, cur);
        let (h8, w8) = (ch * 2, cw * 2);
        self.stage(
            &self.decoder[0],
            &x[..128 * hw],
            ch,
            cw,
            &s8[..s8_len],
            y,
            t,
        );
        self.stage(
            &self.decoder[1],
            &y[..24 * h8 * w8],
            h8,
            w8,
            &s4[..s4_len],
            x,
            t,
        );
        let (h4, w4) = (h8 * 2, w8 * 2);
        // The last stage and the output layer at 1/2 and full size, in bands of rows.
        self.last_stage(&x[..16 * h4 * w4], h4, w4, &s2[..16 * h2 * w2], output, t);
    }

    /// The last decoder stage and the output layer: `x` `[16, h*w]` and `skip` `[16,
    /// 2h*2w]` -> `output` `[1, 4h*4w]` (person probability). The gate and the 1x1 projection
    /// run on whole planes (at `h` x `w`); then, per band of [`BAND`] rows at `2h` x `2w`, the
    /// upsampling and gated skip, the 1x1 convolution, the depthwise refinement and the output
    /// layer run one after the other, so a band's intermediate planes stay in the core's cache
    /// and three full `[16, 2h*2w]` planes (590 KB each for a landscape frame) are never
    /// written. The 1x1 convolution runs again on the one row above and below each band that
    /// the depthwise layer needs. Same values, bit for bit, as running each layer on whole
    /// planes (the arithmetic per value is unchanged; `last_stage_bands_are_exact`). The two
    /// threads take halves of the rows. (On the 2-core VM the banding alone was within the
    /// noise of a whole-plane run, `BAND` 4 to 72 rows: these layers are bound by arithmetic
    /// there, not by memory; the gain of this stage came from vectorising the upsampling and
    /// the sigmoid and from fused multiply-adds.)
    fn last_stage(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        skip: &[f32],
        output: &mut [f32],
        t: &mut Temps,
    ) {
        let st = &self.decoder[2];
        self.stage_gate(st, x, h, w, skip, t);
        let Temps {
            exp,
            gate,
            scratch,
            helper,
            ..
        } = t;
        let (c, hw) = (st.proj.cout(), h * w);
        let (low, gate) = (&exp[..c * hw], &gate[..c]);
        let (uh, uw) = (2 * h, 2 * w);
        let pad = st.dw.kernel / 2;
        let (cv, out_op) = (&st.conv, &self.output);
        split2(
            helper,
            scratch,
            output,
            4 * uw,
            1,
            #[inline(always)]
            |first, part, s| {
                let rows = part.len() / (4 * uw);
                // Per band: merged and convolved rows with the halo, the same laid out with
                // the zero border, the refined rows, the output layer's accumulators, and
                // the horizontally upsampled input rows of one channel.
                let band = self.band.max(1);
                let halo = band + 2 * pad;
                let sizes = [
                    c * halo * uw,
                    c * halo * uw,
                    c * halo * (uw + 2 * pad),
                    c * band * uw,
                    4 * uw,
                    Upsample2x::rows_scratch(halo, w),
                ];
                let buf = fit(s, sizes.iter().sum());
                let (merged, rest) = buf.split_at_mut(sizes[0]);
                let (conv, rest) = rest.split_at_mut(sizes[1]);
                let (padded, rest) = rest.split_at_mut(sizes[2]);
                let (refined, rest) = rest.split_at_mut(sizes[3]);
                let (acc, hrows) = rest.split_at_mut(sizes[4]);
                let mut r0 = first;
                while r0 < first + rows {
                    let r1 = (r0 + band).min(first + rows);
                    let n = r1 - r0;
                    // Rows lo..hi (the band and its halo, inside the plane) are computed.
                    let (lo, hi) = (r0.saturating_sub(pad), (r1 + pad).min(uh));
                    let m = hi - lo;
                    for ch in 0..c {
                        let src = &low[ch * hw..(ch + 1) * hw];
                        let dst = &mut merged[ch * m * uw..(ch + 1) * m * uw];
                        Upsample2x::plane_rows(src, (h, w), lo..hi, dst, hrows);
                        let g = gate[ch];
                        let sk = &skip[(ch * uh + lo) * uw..(ch * uh + hi) * uw];
                        for (v, &s) in dst.iter_mut().zip(sk) {
                            *v += s * g;
                        }
                    }
                    pointwise_gemm(
                        &cv.packed,
                        &cv.bias,
                        cv.act,
                        &merged[..c * m * uw],
                        c,
                        m * uw,
                        None,
                        &mut conv[..c * m * uw],
                    );
                    // Padded row 0 is plane row r0 - pad.
                    let (pw, ph) = (uw + 2 * pad, n + 2 * pad);
                    for ch in 0..c {
                        let p = &mut padded[ch * ph * pw..(ch + 1) * ph * pw];
                        p.fill(0.0);
                        for yy in lo..hi {
                            let row = yy + pad - r0;
                            let src = &conv[(ch * m + yy - lo) * uw..][..uw];
                            p[row * pw + pad..row * pw + pad + uw].copy_from_slice(src);
                        }
                        let own = &conv[(ch * m + r0 - lo) * uw..][..n * uw];
                        st.dw
                            .run_band(ch, p, own, n, uw, &mut refined[ch * n * uw..][..n * uw]);
                    }
                    out_op.run_rows(
                        &refined[..c * n * uw],
                        n,
                        uw,
                        0,
                        &mut part[(r0 - first) * 4 * uw..(r1 - first) * 4 * uw],
                        acc,
                    );
                    r0 = r1;
                }
            },
        );
    }

    /// The start of a decoder stage: the 1x1 projection of `x` `[cin, h*w]` into `t.exp`
    /// `[c, h*w]` and the gate `[c]` of the skip connection `skip` `[c, 2h*2w]` into `t.gate`.
    fn stage_gate(&self, st: &Stage, x: &[f32], h: usize, w: usize, skip: &[f32], t: &mut Temps) {
        let Temps {
            exp,
            means,
            other_means,
            mid,
            gate,
            scratch,
            helper,
            ..
        } = t;
        let (c, cin, hw) = (st.proj.cout(), st.proj.cin, h * w);
        // The 1x1 projection before the upsampling (both linear, bilinear weights sum to 1).
        let low = fit(exp, c * hw);
        let pr = &st.proj;
        pointwise(
            helper,
            scratch,
            &pr.packed,
            &pr.bias,
            pr.act,
            x,
            cin,
            (h, w),
            None,
            low,
        );
        // Gate on mean(skip + up) = mean(skip) + mean(low): 2x half-pixel upsampling with
        // edge clamping keeps the mean.
        channel_means(helper, scratch, skip, c, 4 * hw, means);
        channel_means(helper, scratch, low, c, hw, other_means);
        for (m, o) in means.iter_mut().zip(other_means.iter()).take(c) {
            *m += o;
        }
        st.gate.apply(&means[..c], mid, gate);
    }

    /// One inverted-residual block: `x` `[cin, h*w]` -> `out` `[cout, oh*ow]`; returns
    /// `(oh, ow)`.
    fn block(
        &self,
        blk: &Block,
        x: &[f32],
        h: usize,
        w: usize,
        out: &mut Vec<f32>,
        t: &mut Temps,
    ) -> (usize, usize) {
        let cfg = &blk.cfg;
        let Temps {
            exp,
            dwo,
            means,
            mid,
            gate,
            packed,
            scratch,
            helper,
            ..
        } = t;
        let hw = h * w;
        let e = &blk.expand;
        let exp = fit(exp, cfg.expanded * hw);
        pointwise(
            helper,
            scratch,
            &e.packed,
            &e.bias,
            e.act,
            x,
            cfg.cin,
            (h, w),
            None,
            exp,
        );
        let (oh, ow) = blk.dw.output_size(h, w);
        let ohw = oh * ow;
        let dwo = fit(dwo, cfg.expanded * ohw);
        let dw_means = blk.se.as_ref().map(|_| fit(means, cfg.expanded));
        depthwise(helper, scratch, &blk.dw, exp, h, w, dwo, dw_means);
        let p = &blk.project;
        let weights: &[f32] = match &blk.se {
            Some(se) => {
                se.apply(&means[..cfg.expanded], mid, gate);
                pack_pointwise(
                    &p.weight,
                    cfg.cout,
                    cfg.expanded,
                    None,
                    Some(&gate[..cfg.expanded]),
                    packed,
                );
                packed
            }
            None => &p.packed,
        };
        let residual = cfg.residual().then_some(x);
        pointwise(
            helper,
            scratch,
            weights,
            &p.bias,
            p.act,
            dwo,
            cfg.expanded,
            (oh, ow),
            residual,
            fit(out, cfg.cout * ohw),
        );
        (oh, ow)
    }

    /// One decoder stage: `x` `[cin, h*w]` and `skip` `[c, 2h*2w]` -> `out` `[c, 2h*2w]`.
    #[allow(clippy::too_many_arguments)]
    fn stage(
        &self,
        st: &Stage,
        x: &[f32],
        h: usize,
        w: usize,
        skip: &[f32],
        out: &mut Vec<f32>,
        t: &mut Temps,
    ) {
        self.stage_gate(st, x, h, w, skip, t);
        let Temps {
            exp,
            dwo,
            up,
            gate,
            scratch,
            helper,
            ..
        } = t;
        let (c, hw) = (st.proj.cout(), h * w);
        let uhw = 4 * hw;
        let merged = fit(dwo, c * uhw);
        {
            // Split by rows, as the 1x1 convolution next is and as the skip was written, so
            // each thread reads its own core's rows (split by channels, each read half of
            // every row it needed from the other core).
            let (low, gate) = (&exp[..c * hw], &gate[..c]);
            let uw = 2 * w;
            split_pixels(
                helper,
                scratch,
                merged,
                (2 * h, uw),
                #[inline(always)]
                |part, s| {
                    let cols = part.columns();
                    let rows = cols.start / uw..cols.end / uw;
                    for ch in 0..c {
                        let m = part.row(ch);
                        let src = &low[ch * hw..(ch + 1) * hw];
                        let scratch = fit(s, Upsample2x::rows_scratch(rows.len(), w));
                        Upsample2x::plane_rows(src, (h, w), rows.clone(), m, scratch);
                        let g = gate[ch];
                        let sk = &skip[ch * uhw + cols.start..ch * uhw + cols.end];
                        for (v, &sk) in m.iter_mut().zip(sk) {
                            *v += sk * g;
                        }
                    }
                },
            );
        }
        let conv = fit(up, c * uhw);
        let cv = &st.conv;
        pointwise(
            helper,
            scratch,
            &cv.packed,
            &cv.bias,
            cv.act,
            merged,
            c,
            (2 * h, 2 * w),
            None,
            conv,
        );
        depthwise(
            helper,
            scratch,
            &st.dw,
            conv,
            2 * h,
            2 * w,
            fit(out, c * uhw),
            None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameRef, PixelFormat};
    use crate::model::helper::Balance;
    use crate::model::Preset;
    use crate::preprocess::Preprocessor;
    use candle_core::{DType, Device};

    /// The demo photo as model input `[1, 3, h, w]`.
    fn demo_input(h: usize, w: usize) -> Vec<f32> {
        let photo = image::open(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/assets/demo/person.jpg"
        ))
        .expect("demo photo")
        .to_rgb8();
        let frame = FrameRef::packed(
            photo.as_raw(),
            photo.width() as usize,
            photo.height() as usize,
            PixelFormat::Rgb,
        )
        .expect("frame");
        Preprocessor::new(w, h).run(&frame).to_vec()
    }

    /// The gates' FCs over transposed weights give the bits of the row-by-row dot product
    /// (`w * v` summed in input order), for every FC of the network and odd inputs (large,
    /// tiny, negative, zero), so the faster loop cannot change a probability.
    #[test]
    fn gate_fcs_equal_the_row_by_row_sum() -> Result<()> {
        let vb = VarBuilder::from_slice_safetensors(
            Preset::Landscape.embedded_weights(),
            DType::F32,
            &Device::Cpu,
        )?;
        let net = FusedNet::new(vb.clone())?;
        let mut fcs: Vec<(&Fc, Vec<f32>)> = vec![(
            &net.head_gate,
            get(&vb.pp("head").pp("gate"), &[128, 32, 1, 1], "weight")?,
        )];
        for (i, blk) in net.blocks.iter().enumerate() {
            if let Some(se) = &blk.se {
                let v = vb.pp("blocks").pp(i).pp("se");
                let (c, r) = (se.expand.bias.len(), se.reduce.bias.len());
                fcs.push((&se.reduce, get(&v.pp("reduce"), &[r, c, 1, 1], "weight")?));
                fcs.push((&se.expand, get(&v.pp("expand"), &[c, r, 1, 1], "weight")?));
            }
        }
        for (i, st) in net.decoder.iter().enumerate() {
            let v = vb.pp("decoder").pp(i).pp("gate");
            let c = st.gate.expand.bias.len();
            fcs.push((
                &st.gate.reduce,
                get(&v.pp("reduce"), &[c, c, 1, 1], "weight")?,
            ));
            fcs.push((
                &st.gate.expand,
                get(&v.pp("expand"), &[c, c, 1, 1], "weight")?,
            ));
        }
        assert_eq!(fcs.len(), 1 + 2 * 6 + 2 * 3);
        for (fc, weight) in fcs {
            let (cin, cout) = (fc.cin, fc.bias.len());
            let x: Vec<f32> = (0..cin)
                .map(|k| match k % 5 {
                    0 => 0.0,
                    1 => -1.7e3 / (k as f32 + 1.0),
                    2 => 3.3e-4 * k as f32,
                    _ => (k as f32 * 0.37).sin(),
                })
                .collect();
            let mut got = vec![0f32; cout];
            fc.apply_vec(&x, &mut got);
            for (o, (row, &b)) in weight.chunks_exact(cin).zip(&fc.bias).enumerate() {
                let z: f32 = row.iter().zip(&x).map(|(w, v)| w * v).sum();
                let want = fc.act.apply(z + b);
                assert_eq!(got[o].to_bits(), want.to_bits(), "{cin}->{cout} output {o}");
            }
        }
        Ok(())
    }

    /// The stem keeps its padded layout between frames of one size: a frame after frames of
    /// other sizes, one of them with the same number of values (144x256 after 256x144),
    /// must give the bits of a fresh network.
    #[test]
    fn stem_layout_follows_the_input_size() -> Result<()> {
        let weights = || {
            VarBuilder::from_slice_safetensors(
                Preset::Landscape.embedded_weights(),
                DType::F32,
                &Device::Cpu,
            )
        };
        let run = |net: &FusedNet, h: usize, w: usize, threads: usize| -> Result<Vec<f32>> {
            let input = demo_input(h, w);
            let mut out = vec![0f32; h * w];
            net.run(&input, &mut out, h, w, threads)?;
            Ok(out)
        };
        // Each thread keeps a layout of its own: the helper's must follow the size too when
        // frames of another size ran on one thread in between (144x256 and 256x144 lay out
        // to buffers of the same length, with the padding elsewhere).
        let used = FusedNet::new(weights()?)?;
        for (h, w, threads) in [
            (144, 256, 2),
            (256, 144, 1),
            (256, 144, 2),
            (144, 256, 1),
            (160, 96, 2),
            (144, 256, 2),
        ] {
            let warm = run(&used, h, w, threads)?;
            let fresh = run(&FusedNet::new(weights()?)?, h, w, 1)?;
            let differ = warm.iter().zip(&fresh).filter(|(a, b)| a != b).count();
            assert_eq!(differ, 0, "{w}x{h} on {threads} threads after other sizes");
        }
        Ok(())
    }

    /// The banded last stage gives the same probabilities, bit for bit, whatever the band
    /// height: one band of the whole plane is the layer-by-layer computation; bands of 1 and
    /// 5 rows put band edges (and the recomputed halo rows) everywhere; on 1 and 2 threads.
    #[test]
    fn last_stage_bands_are_exact() -> Result<()> {
        for preset in [Preset::Landscape, Preset::Square] {
            let vb = VarBuilder::from_slice_safetensors(
                preset.embedded_weights(),
                DType::F32,
                &Device::Cpu,
            )?;
            let mut net = FusedNet::new(vb)?;
            let (h, w) = (144, 256);
            let input = demo_input(h, w);
            let mut whole = vec![0f32; h * w];
            net.band = h / 2;
            net.run(&input, &mut whole, h, w, 1)?;
            let spread = whole.iter().fold(0f32, |m, &p| m.max(p))
                - whole.iter().fold(1f32, |m, &p| m.min(p));
            assert!(spread > 0.5, "{preset:?}: probabilities span only {spread}");
            for (band, threads) in [(1, 1), (5, 2), (BAND, 1), (BAND, 2)] {
                net.band = band;
                let mut out = vec![0f32; h * w];
                net.run(&input, &mut out, h, w, threads)?;
                let differ = out.iter().zip(&whole).filter(|(a, b)| a != b).count();
                assert_eq!(
                    differ, 0,
                    "{preset:?}, bands of {band} rows, {threads} threads"
                );
            }
        }
        Ok(())
    }

    /// The split follows the caller's share: at 0.5 the caller takes the larger half (the
    /// 9-row landscape planes at 1/16 size split 5:4), otherwise the first row from the share
    /// whose pixels start a 16-pixel block; `None` when no row is left to the helper.
    /// The depthwise layers' split by channels follows the share too, the caller taking the
    /// larger part at 0.5; a split that would leave a thread without a plane is none.
    #[test]
    fn split_channel_follows_the_share() {
        assert_eq!(split_channel(72, 0.5), Some(36));
        assert_eq!(split_channel(88, 0.6), Some(53));
        assert_eq!(split_channel(9, 0.5), Some(5));
        assert_eq!(split_channel(128, 0.25), Some(32));
        assert_eq!(split_channel(2, 0.75), None); // 1.5 rounds up to both planes
        assert_eq!(split_channel(1, 0.5), None);
    }

    #[test]
    fn split_row_follows_the_share() {
        assert_eq!(split_row(9, 16, 0.5), Some(5));
        assert_eq!(split_row(36, 64, 0.5), Some(18));
        assert_eq!(split_row(36, 64, 0.6), Some(22));
        assert_eq!(split_row(36, 64, 0.25), Some(9));
        assert_eq!(split_row(18, 8, 0.5), Some(10)); // 9 * 8 = 72 starts no block of 16
        assert_eq!(split_row(9, 16, 0.95), None);
        assert_eq!(split_row(1, 16, 0.5), None);
    }

    /// Wherever the learnt share puts the split, two threads give one thread's bits: the
    /// helper's balance is set to lean each way as far as it can go, and the share the frames
    /// used is checked.
    #[test]
    fn any_share_gives_the_bits_of_one_thread() -> Result<()> {
        let vb = VarBuilder::from_slice_safetensors(
            Preset::Landscape.embedded_weights(),
            DType::F32,
            &Device::Cpu,
        )?;
        let net = FusedNet::new(vb)?;
        let (h, w) = (144, 256);
        let input = demo_input(h, w);
        let mut one = vec![0f32; h * w];
        net.run(&input, &mut one, h, w, 1)?;
        for share in [0.25, 0.4, 0.6, 0.75] {
            let mut two = vec![f32::NAN; h * w];
            net.run(&input, &mut two, h, w, 2)?;
            {
                let mut pool = net.pool.lock();
                let ws = pool
                    .iter_mut()
                    .find(|ws| ws.threads() == 2)
                    .expect("2 threads");
                let helper = ws.t.helper.as_mut().expect("helper");
                helper.balance = Balance::leaning(share);
            }
            net.run(&input, &mut two, h, w, 2)?;
            let used = net
                .pool
                .lock()
                .iter()
                .find(|ws| ws.threads() == 2)
                .map(|ws| ws.t.helper.as_ref().map(|h| h.balance.share()));
            assert_eq!(used, Some(Some(share)), "the frame's share");
            let differ = two.iter().zip(&one).filter(|(a, b)| a != b).count();
            assert_eq!(differ, 0, "caller's share {share}");
        }
        Ok(())
    }
}
