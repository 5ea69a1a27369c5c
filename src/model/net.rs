//! The MediaPipe selfie-segmentation network ("U-Net-lite") as candle modules.
//!
//! Architecture, read off the reference `.tflite` graphs (see `models/MODEL_CARD.md`):
//! a MobileNetV3-small-style encoder (a 3x3 stride-2 stem with hard-swish, then eight
//! inverted-residual blocks with optional squeeze-and-excitation), an LR-ASPP-style head
//! (Howard et al., "Searching for MobileNetV3", 2019, §6.3), three decoder stages that
//! upsample 2x bilinearly and merge a gated skip connection, and a 2x2 stride-2 transposed
//! convolution with a sigmoid that gives the person probability at the input resolution.
//!
//! Every `vb.pp(..)` name below is a key prefix of the weight files written by
//! `tools/convert_tflite.py`. Tensors are NCHW with batch size 1.
//!
//! Two execution paths compute the same function:
//! - [`Kernels::Stock`] is a literal transcription of the TFLite graph in stock candle ops; it
//!   runs on every device and is the reference the other path is tested against.
//! - [`Kernels::Cpu`] uses the custom CPU kernels of [`super::kernels`] and exact algebraic
//!   rewrites that remove whole-tensor passes:
//!   - a squeeze-and-excitation gate `g` before a 1x1 convolution scales the weight's columns
//!     instead of the tensor: `W (g ⊙ x) = (W diag g) x`;
//!   - the head's sigmoid gate scales the conv's rows and bias: `relu(z) g = relu(g z)` for
//!     `g > 0`;
//!   - a decoder's 1x1 projection runs before the 2x upsampling (both are linear and bilinear
//!     weights sum to 1), on 4x fewer pixels;
//!   - the decoder gate's mean of `skip + up` is `mean(skip) + mean(proj(x))`: half-pixel 2x
//!     upsampling with edge clamping preserves the mean exactly;
//!   - biases, activations, residual and gated additions are fused into the producing kernel.

use super::kernels::{
    same_padding, Activation, DenseConv, DepthwiseConv, GatedAdd, PointwiseConv,
    TransposedConv2x2Sigmoid, Upsample2x,
};
use super::ops::count;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// How the layers run: candle's stock ops (any device) or the fused CPU kernels of
/// [`super::kernels`] (CPU only, several times faster).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// Stock candle ops: `conv2d` with `groups = C` for depthwise layers, broadcast bias.
    Stock,
    /// The custom CPU ops (depthwise convolution, in-place bias + activation).
    Cpu,
    /// Whole-tensor candle ops without per-channel splits ([`super::portable`]): what CUDA
    /// and Metal run.
    Portable,
}

/// A 1x1 convolution computed as one matrix product `[Cout, Cin] x [Cin, H*W]`, plus bias
/// and activation.
#[derive(Clone, Debug)]
pub struct Pointwise {
    weight: Tensor,
    /// `[cout, cin]` row-major, for the gate-folding rewrites and vector products.
    weight_vec: Vec<f32>,
    bias: Tensor,
    bias_vec: Vec<f32>,
    activation: Activation,
    kernels: Kernels,
}

impl Pointwise {
    /// Loads `weight` `[cout, cin, 1, 1]` and `bias` `[cout]` from `vb`.
    pub fn new(
        cin: usize,
        cout: usize,
        activation: Activation,
        kernels: Kernels,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get((cout, cin, 1, 1), "weight")?.reshape((cout, cin))?;
        let bias = vb.get(cout, "bias")?;
        Ok(Self {
            weight_vec: weight.flatten_all()?.to_vec1::<f32>()?,
            weight,
            bias_vec: bias.to_vec1::<f32>()?,
            bias: bias.reshape((1, cout, 1, 1))?,
            activation,
            kernels,
        })
    }

    fn cin(&self) -> usize {
        self.weight_vec.len() / self.bias_vec.len()
    }

    /// The layer on a single pixel (`[cin]` -> `[cout]`), for gates on channel means.
    pub fn apply_vec(&self, x: &[f32]) -> Vec<f32> {
        let cin = self.cin();
        self.weight_vec
            .chunks_exact(cin)
            .zip(&self.bias_vec)
            .map(|(row, &b)| {
                let z: f32 = row.iter().zip(x).map(|(w, v)| w * v).sum();
                self.activation.apply(z + b)
            })
            .collect()
    }

    /// The fused CPU path: `act(diag(rows) W diag(cols) x + rows ⊙ b) + residual`, each
    /// factor optional. `cols` is a gate on the input channels, `rows` a positive gate on the
    /// output channels (it commutes with ReLU only for positive values).
    pub fn forward_fused(
        &self,
        x: &Tensor,
        cols: Option<&[f32]>,
        rows: Option<&[f32]>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let cin = self.cin();
        let scaled;
        let weight = if cols.is_none() && rows.is_none() {
            &self.weight_vec
        } else {
            let mut wv = self.weight_vec.clone();
            for (o, row) in wv.chunks_exact_mut(cin).enumerate() {
                let r = rows.map_or(1.0, |g| g[o]);
                for (i, v) in row.iter_mut().enumerate() {
                    *v *= r * cols.map_or(1.0, |g| g[i]);
                }
            }
            scaled = wv;
            &scaled
        };
        let scaled_bias: Vec<f32>;
        let bias = match rows {
            Some(g) => {
                scaled_bias = self.bias_vec.iter().zip(g).map(|(b, g)| b * g).collect();
                &scaled_bias
            }
            None => &self.bias_vec,
        };
        let op = PointwiseConv {
            weight,
            bias,
            activation: self.activation,
        };
        match residual {
            Some(r) => x.apply_op2_no_bwd(r, &op),
            None => x.apply_op1_no_bwd(&op),
        }
    }
}

impl Module for Pointwise {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.kernels == Kernels::Cpu {
            return self.forward_fused(x, None, None, None);
        }
        let (n, cin, h, w) = x.dims4()?;
        let cout = self.weight.dim(0)?;
        let y = self
            .weight
            .matmul(&x.reshape((cin, n * h * w))?)?
            .reshape((n, cout, h, w))?;
        count(2 + stock_activation_ops(self.activation), ());
        self.activation.apply_tensor(&y.broadcast_add(&self.bias)?)
    }
}

/// A depthwise `k`x`k` convolution with TensorFlow SAME padding, bias and activation.
#[derive(Clone, Debug)]
pub struct Depthwise {
    weight: Tensor,
    bias: Tensor,
    op: DepthwiseConv,
    kernels: Kernels,
}

impl Depthwise {
    /// Loads `weight` `[c, 1, k, k]` and `bias` `[c]` from `vb`. With `residual`, the output
    /// is `x + act(dw(x))` (stride 1).
    pub fn new(
        c: usize,
        kernel: usize,
        stride: usize,
        activation: Activation,
        residual: bool,
        kernels: Kernels,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get((c, 1, kernel, kernel), "weight")?;
        let bias = vb.get(c, "bias")?;
        let op = DepthwiseConv {
            weight: weight.flatten_all()?.to_vec1::<f32>()?,
            bias: bias.to_vec1::<f32>()?,
            kernel,
            stride,
            activation,
            residual,
        };
        Ok(Self {
            weight,
            bias: bias.reshape((1, c, 1, 1))?,
            op,
            kernels,
        })
    }
}

impl Module for Depthwise {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self.kernels {
            Kernels::Cpu => x.apply_op1_no_bwd(&self.op),
            Kernels::Stock | Kernels::Portable => {
                let (_, c, h, w) = x.dims4()?;
                let (k, s) = (self.op.kernel, self.op.stride);
                let (pt, pb) = same_padding(h, k, s);
                let (pl, pr) = same_padding(w, k, s);
                let y = x
                    .pad_with_zeros(2, pt, pb)?
                    .pad_with_zeros(3, pl, pr)?
                    .conv2d(&self.weight, 0, s, 1, c)?
                    .broadcast_add(&self.bias)?;
                // Padding: zeros + cat copies per padded side; grouped conv2d: one conv per
                // channel plus one copy each into the concatenated output; bias; activation.
                count(
                    pad_ops(pt, pb)
                        + pad_ops(pl, pr)
                        + 2 * c
                        + 1
                        + stock_activation_ops(self.op.activation)
                        + usize::from(self.op.residual),
                    (),
                );
                let y = self.op.activation.apply_tensor(&y)?;
                if self.op.residual {
                    x + y
                } else {
                    Ok(y)
                }
            }
        }
    }
}

/// The stem: a dense 3x3 stride-2 convolution, 3 -> 16 channels, SAME padding, hard-swish.
#[derive(Clone, Debug)]
pub struct Stem {
    weight: Tensor,
    bias: Tensor,
    op: DenseConv,
    kernels: Kernels,
}

impl Stem {
    /// Loads `stem.weight` `[16, 3, 3, 3]` and `stem.bias` `[16]`.
    pub fn new(kernels: Kernels, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((16, 3, 3, 3), "weight")?;
        let bias = vb.get(16, "bias")?;
        let op = DenseConv {
            weight: weight.flatten_all()?.to_vec1::<f32>()?,
            bias: bias.to_vec1::<f32>()?,
            cin: 3,
            kernel: 3,
            stride: 2,
            activation: Activation::HardSwish,
        };
        Ok(Self {
            weight,
            bias: bias.reshape((1, 16, 1, 1))?,
            op,
            kernels,
        })
    }
}

impl Module for Stem {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.kernels == Kernels::Cpu {
            return x.apply_op1_no_bwd(&self.op);
        }
        let (_, _, h, w) = x.dims4()?;
        let (pt, pb) = same_padding(h, 3, 2);
        let (pl, pr) = same_padding(w, 3, 2);
        let y = x
            .pad_with_zeros(2, pt, pb)?
            .pad_with_zeros(3, pl, pr)?
            .conv2d(&self.weight, 0, 2, 1, 1)?
            .broadcast_add(&self.bias)?;
        count(
            pad_ops(pt, pb) + pad_ops(pl, pr) + 2 + stock_activation_ops(self.op.activation),
            (),
        );
        self.op.activation.apply_tensor(&y)
    }
}

/// Operations of [`Activation::apply_tensor`]: hard-swish is an add, a scalar clamp (two
/// scalar uploads and two comparisons), a division and a product.
fn stock_activation_ops(a: Activation) -> usize {
    match a {
        Activation::None => 0,
        Activation::Relu | Activation::Sigmoid => 1,
        Activation::HardSwish => 7,
    }
}

/// Operations of `pad_with_zeros(before, after)`: a zero tensor per padded side and one copy
/// per concatenated piece.
fn pad_ops(before: usize, after: usize) -> usize {
    match (before > 0, after > 0) {
        (false, false) => 0,
        (true, true) => 5,
        _ => 3,
    }
}

/// Global average over H and W: `[1, C, H, W]` -> `[1, C, 1, 1]` (TFLite `MEAN` in the
/// landscape model, a full-size `AVERAGE_POOL_2D` in the square one).
fn global_mean(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    count(2, ());
    x.reshape((n, c, h * w))?
        .mean_keepdim(2)?
        .reshape((n, c, 1, 1))
}

/// Per-channel means of `[1, C, H, W]` as a vector.
fn channel_means(x: &Tensor) -> Result<Vec<f32>> {
    global_mean(x)?.flatten_all()?.to_vec1::<f32>()
}

/// A squeeze-and-excitation gate (Hu et al., 2018): global mean -> 1x1 reduce -> ReLU ->
/// 1x1 expand -> sigmoid, giving one weight per channel `[1, C, 1, 1]`.
#[derive(Clone, Debug)]
pub struct ChannelGate {
    reduce: Pointwise,
    expand: Pointwise,
}

impl ChannelGate {
    /// Loads `reduce` (`c -> reduced`) and `expand` (`reduced -> c`).
    pub fn new(c: usize, reduced: usize, kernels: Kernels, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            reduce: Pointwise::new(c, reduced, Activation::Relu, kernels, vb.pp("reduce"))?,
            expand: Pointwise::new(reduced, c, Activation::Sigmoid, kernels, vb.pp("expand"))?,
        })
    }
}

impl ChannelGate {
    /// The gate from channel means already computed: `[C]` -> `[C]` in 0..1.
    pub fn from_means(&self, means: &[f32]) -> Vec<f32> {
        self.expand.apply_vec(&self.reduce.apply_vec(means))
    }
}

impl Module for ChannelGate {
    /// `[1, C, H, W]` -> per-channel gate `[1, C, 1, 1]` in 0..1.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.expand.forward(&self.reduce.forward(&global_mean(x)?)?)
    }
}

/// Shape of one inverted-residual block.
#[derive(Clone, Copy, Debug)]
pub struct BlockConfig {
    /// Input channels.
    pub cin: usize,
    /// Channels after the 1x1 expansion.
    pub expanded: usize,
    /// Output channels.
    pub cout: usize,
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Depthwise stride.
    pub stride: usize,
    /// Activation after the expansion and after the depthwise convolution.
    pub activation: Activation,
    /// Reduced channels of the squeeze-and-excitation gate, if the block has one.
    pub se: Option<usize>,
}

impl BlockConfig {
    /// Whether the block adds its input to its output (stride 1, same channels).
    pub fn residual(&self) -> bool {
        self.stride == 1 && self.cin == self.cout
    }
}

/// The encoder's eight blocks, read off the reference graph (`conv2d_1` .. `conv2d_28`,
/// `depthwise_conv2d` .. `depthwise_conv2d_7`).
pub const BLOCKS: [BlockConfig; 8] = {
    use Activation::{HardSwish as Hs, Relu};
    const fn b(
        cin: usize,
        expanded: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        activation: Activation,
        se: Option<usize>,
    ) -> BlockConfig {
        BlockConfig {
            cin,
            expanded,
            cout,
            kernel,
            stride,
            activation,
            se,
        }
    }
    [
        b(16, 16, 16, 3, 2, Relu, Some(8)),
        b(16, 72, 24, 3, 2, Relu, None),
        b(24, 88, 24, 3, 1, Relu, None),
        b(24, 96, 32, 5, 2, Hs, Some(24)),
        b(32, 128, 32, 5, 1, Hs, Some(32)),
        b(32, 128, 32, 5, 1, Hs, Some(32)),
        b(32, 96, 32, 5, 1, Hs, Some(24)),
        b(32, 96, 32, 5, 1, Hs, Some(24)),
    ]
};

/// An inverted-residual block (Sandler et al., "MobileNetV2", 2018): 1x1 expand +
/// activation, depthwise + activation, optional squeeze-and-excitation, linear 1x1 project,
/// residual add when shapes allow.
#[derive(Clone, Debug)]
pub struct InvertedResidual {
    expand: Pointwise,
    dw: Depthwise,
    se: Option<ChannelGate>,
    project: Pointwise,
    residual: bool,
}

impl InvertedResidual {
    /// Loads `expand`, `dw`, `se.{reduce,expand}` and `project` from `vb`.
    pub fn new(cfg: &BlockConfig, kernels: Kernels, vb: VarBuilder) -> Result<Self> {
        let se = match cfg.se {
            Some(r) => Some(ChannelGate::new(cfg.expanded, r, kernels, vb.pp("se"))?),
            None => None,
        };
        Ok(Self {
            expand: Pointwise::new(
                cfg.cin,
                cfg.expanded,
                cfg.activation,
                kernels,
                vb.pp("expand"),
            )?,
            dw: Depthwise::new(
                cfg.expanded,
                cfg.kernel,
                cfg.stride,
                cfg.activation,
                false,
                kernels,
                vb.pp("dw"),
            )?,
            se,
            project: Pointwise::new(
                cfg.expanded,
                cfg.cout,
                Activation::None,
                kernels,
                vb.pp("project"),
            )?,
            residual: cfg.residual(),
        })
    }
}

impl Module for InvertedResidual {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.expand.kernels == Kernels::Cpu {
            let y = self.dw.forward(&self.expand.forward(x)?)?;
            let gate = match &self.se {
                Some(se) => Some(se.from_means(&channel_means(&y)?)),
                None => None,
            };
            return self.project.forward_fused(
                &y,
                gate.as_deref(),
                None,
                self.residual.then_some(x),
            );
        }
        let mut y = self.dw.forward(&self.expand.forward(x)?)?;
        if let Some(se) = &self.se {
            y = count(1, y.broadcast_mul(&se.forward(&y)?))?;
        }
        let y = self.project.forward(&y)?;
        if self.residual {
            count(1, ());
            y + x
        } else {
            Ok(y)
        }
    }
}

/// The LR-ASPP-style head: `relu(conv(x)) * sigmoid(gate(mean(x)))`, 32 -> 128 channels.
#[derive(Clone, Debug)]
pub struct Head {
    conv: Pointwise,
    gate: Pointwise,
}

impl Head {
    /// Loads `conv` and `gate` (both `[128, 32, 1, 1]`).
    pub fn new(kernels: Kernels, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: Pointwise::new(32, 128, Activation::Relu, kernels, vb.pp("conv"))?,
            gate: Pointwise::new(32, 128, Activation::Sigmoid, kernels, vb.pp("gate"))?,
        })
    }
}

impl Module for Head {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.conv.kernels == Kernels::Cpu {
            let gate = self.gate.apply_vec(&channel_means(x)?);
            return self.conv.forward_fused(x, None, Some(&gate), None);
        }
        let gate = self.gate.forward(&global_mean(x)?)?;
        count(1, self.conv.forward(x)?.broadcast_mul(&gate))
    }
}

/// One decoder stage: 2x bilinear upsampling (half-pixel centres, as TFLite
/// `RESIZE_BILINEAR` with `half_pixel_centers`), a 1x1 projection to the skip's channels, a
/// skip connection weighted by a channel gate computed from `skip + up`, then a 1x1
/// convolution and a residual depthwise 3x3 refinement.
#[derive(Clone, Debug)]
pub struct DecoderStage {
    proj: Pointwise,
    gate: ChannelGate,
    conv: Pointwise,
    dw: Depthwise,
}

impl DecoderStage {
    /// Loads `proj` (`cin -> c`), `gate.{reduce,expand}` (`c -> c -> c`), `conv` (`c -> c`)
    /// and `dw` (3x3, `c`) from `vb`, where `c` is the skip connection's channel count.
    pub fn new(cin: usize, c: usize, kernels: Kernels, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            proj: Pointwise::new(cin, c, Activation::None, kernels, vb.pp("proj"))?,
            gate: ChannelGate::new(c, c, kernels, vb.pp("gate"))?,
            conv: Pointwise::new(c, c, Activation::Relu, kernels, vb.pp("conv"))?,
            dw: Depthwise::new(c, 3, 1, Activation::Relu, true, kernels, vb.pp("dw"))?,
        })
    }

    /// `x` `[1, cin, h, w]` and `skip` `[1, c, 2h, 2w]` -> `[1, c, 2h, 2w]`.
    pub fn forward(&self, x: &Tensor, skip: &Tensor) -> Result<Tensor> {
        if self.proj.kernels == Kernels::Cpu {
            let low = self.proj.forward(x)?;
            let means: Vec<f32> = channel_means(skip)?
                .iter()
                .zip(channel_means(&low)?)
                .map(|(a, b)| a + b)
                .collect();
            let gate = self.gate.from_means(&means);
            let merged = low.apply_op1_no_bwd(&Upsample2x)?;
            merged.inplace_op2(skip, &GatedAdd { gate })?;
            return self.dw.forward(&self.conv.forward(&merged)?);
        }
        let (_, _, h, w) = x.dims4()?;
        let up = self
            .proj
            .forward(&count(1, x.upsample_bilinear2d(2 * h, 2 * w, false))?)?;
        let gate = self.gate.forward(&count(1, skip + &up)?)?;
        let merged = count(2, skip.broadcast_mul(&gate)? + up)?;
        // c + relu(dw(c)): the residual is part of `dw`.
        self.dw.forward(&self.conv.forward(&merged)?)
    }
}

/// The output layer: a 2x2 stride-2 transposed convolution 16 -> 1 channel plus bias
/// (MediaPipe's custom op `Convolution2DTransposeBias`, kernel not flipped), then a sigmoid.
///
/// As the 2x2 output blocks do not overlap, it is computed as a 1x1 convolution to four
/// channels (one per position in the block) followed by a depth-to-space rearrangement.
#[derive(Clone, Debug)]
pub struct Output {
    /// `[4, 16]`: row `dy * 2 + dx` holds the taps for output offset `(dy, dx)`.
    weight: Tensor,
    bias: Tensor,
    op: TransposedConv2x2Sigmoid,
    kernels: Kernels,
}

impl Output {
    /// Loads `final.weight` `[16, 1, 2, 2]` (candle `conv_transpose2d` layout
    /// `[Cin, Cout, kH, kW]`) and `final.bias` `[1]`.
    pub fn new(kernels: Kernels, vb: VarBuilder) -> Result<Self> {
        let raw = vb.get((16, 1, 2, 2), "weight")?;
        let bias = vb.get(1, "bias")?;
        let op = TransposedConv2x2Sigmoid {
            weight: raw.flatten_all()?.to_vec1::<f32>()?,
            bias: bias.to_vec1::<f32>()?[0],
        };
        Ok(Self {
            weight: raw.reshape((16, 4))?.t()?.contiguous()?,
            bias,
            op,
            kernels,
        })
    }
}

impl Module for Output {
    /// `[1, 16, h, w]` -> person probability `[1, 1, 2h, 2w]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.kernels == Kernels::Cpu {
            return x.apply_op1_no_bwd(&self.op);
        }
        let (n, c, h, w) = x.dims4()?;
        let y = self.weight.matmul(&x.reshape((c, n * h * w))?)?; // [4, h*w]
        let y = y
            .reshape((2, 2, h, w))?
            .permute((2, 0, 3, 1))? // [h, dy, w, dx]
            .reshape((n, 1, 2 * h, 2 * w))?
            .broadcast_add(&self.bias)?;
        // matmul, the permuted copy, bias, sigmoid.
        count(4, candle_nn::ops::sigmoid(&y))
    }
}

/// The whole network: NCHW RGB in 0..1 `[1, 3, H, W]` -> person probability `[1, 1, H, W]`,
/// for H and W multiples of 32 (the two presets are `[1, 3, 144, 256]` and
/// `[1, 3, 256, 256]`).
#[derive(Clone, Debug)]
pub struct SelfieSegmentation {
    stem: Stem,
    blocks: Vec<InvertedResidual>,
    head: Head,
    decoder: [DecoderStage; 3],
    output: Output,
}

impl SelfieSegmentation {
    /// Builds the network from `vb` (keys as written by `tools/convert_tflite.py`).
    pub fn new(kernels: Kernels, vb: VarBuilder) -> Result<Self> {
        let blocks = BLOCKS
            .iter()
            .enumerate()
            .map(|(i, cfg)| InvertedResidual::new(cfg, kernels, vb.pp("blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let d = vb.pp("decoder");
        Ok(Self {
            stem: Stem::new(kernels, vb.pp("stem"))?,
            blocks,
            head: Head::new(kernels, vb.pp("head"))?,
            decoder: [
                DecoderStage::new(128, 24, kernels, d.pp(0))?,
                DecoderStage::new(24, 16, kernels, d.pp(1))?,
                DecoderStage::new(16, 16, kernels, d.pp(2))?,
            ],
            output: Output::new(kernels, vb.pp("final"))?,
        })
    }
}

impl Module for SelfieSegmentation {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s2 = self.stem.forward(x)?; // 1/2, 16 channels
        let s4 = self.blocks[0].forward(&s2)?; // 1/4, 16
        let mut y = self.blocks[1].forward(&s4)?;
        let s8 = self.blocks[2].forward(&y)?; // 1/8, 24
        y = s8.clone();
        for block in &self.blocks[3..] {
            y = block.forward(&y)?; // 1/16, 32
        }
        let y = self.head.forward(&y)?; // 1/16, 128
        let y = self.decoder[0].forward(&y, &s8)?;
        let y = self.decoder[1].forward(&y, &s4)?;
        let y = self.decoder[2].forward(&y, &s2)?;
        self.output.forward(&y)
    }
}
