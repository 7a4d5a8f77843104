//! The down, mid and up blocks of `UNet2DModel`: diffusers `models/unets/unet_2d_blocks.py`
//! (`DownBlock2D`, `AttnDownBlock2D`, `UNetMidBlock2D`, `UpBlock2D`, `AttnUpBlock2D`).
//! One struct covers each pair with and without attention: `attentions` is empty for the
//! plain blocks, so the parameter names stay exactly diffusers'.

use burn::tensor::Tensor;

use crate::error::Result;
use crate::models::attention::Attention;
use crate::models::resnet::{Downsample2D, ResnetBlock2D, ResnetOptions, Upsample2D};
use crate::weights::TensorSource;

/// Attention settings of a block: head size, norm groups and eps.
#[derive(Debug, Clone, Copy)]
pub struct AttnOptions {
    pub head_dim: usize,
    pub groups: Option<usize>,
    pub eps: f64,
}

impl AttnOptions {
    /// The `Attention` of a block with `channels` channels at `prefix`.
    fn load(
        self,
        src: &mut impl TensorSource,
        prefix: &str,
        channels: usize,
        resnet: ResnetOptions,
    ) -> Result<Attention> {
        Attention::load(
            src,
            prefix,
            channels,
            self.head_dim,
            self.groups,
            self.eps,
            resnet.output_scale_factor,
        )
    }
}

/// `DownBlock2D` (no attention) or `AttnDownBlock2D`.
#[derive(Debug, Clone)]
pub struct DownBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Attention>,
    pub downsampler: Option<Downsample2D>,
}

impl DownBlock2D {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        src: &mut impl TensorSource,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
        num_layers: usize,
        resnet: ResnetOptions,
        attn: Option<AttnOptions>,
        add_downsample: bool,
        downsample_padding: usize,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(num_layers);
        let mut attentions = Vec::new();
        for i in 0..num_layers {
            let cin = if i == 0 { in_channels } else { out_channels };
            resnets.push(ResnetBlock2D::load(
                src,
                &format!("{prefix}.resnets.{i}"),
                cin,
                out_channels,
                resnet,
            )?);
            if let Some(a) = attn {
                attentions.push(a.load(
                    src,
                    &format!("{prefix}.attentions.{i}"),
                    out_channels,
                    resnet,
                )?);
            }
        }
        let downsampler = if add_downsample {
            Some(Downsample2D::load(
                src,
                &format!("{prefix}.downsamplers.0"),
                out_channels,
                downsample_padding,
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            downsampler,
        })
    }

    /// Returns the block output and the states it hands to the skip connections
    /// (one per layer, plus the downsampled one).
    pub fn forward(
        &self,
        mut x: Tensor<4>,
        temb: &Tensor<2>,
        skips: &mut Vec<Tensor<4>>,
    ) -> Tensor<4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(x, temb.clone());
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(x);
            }
            skips.push(x.clone());
        }
        if let Some(down) = &self.downsampler {
            x = down.forward(x);
            skips.push(x.clone());
        }
        x
    }
}

/// `UNetMidBlock2D`: resnet, then (attention, resnet) once.
#[derive(Debug, Clone)]
pub struct UNetMidBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Attention>,
}

impl UNetMidBlock2D {
    pub fn load(
        src: &mut impl TensorSource,
        prefix: &str,
        channels: usize,
        resnet: ResnetOptions,
        attn: Option<AttnOptions>,
    ) -> Result<Self> {
        let resnets = vec![
            ResnetBlock2D::load(
                src,
                &format!("{prefix}.resnets.0"),
                channels,
                channels,
                resnet,
            )?,
            ResnetBlock2D::load(
                src,
                &format!("{prefix}.resnets.1"),
                channels,
                channels,
                resnet,
            )?,
        ];
        let attentions = match attn {
            Some(a) => vec![a.load(src, &format!("{prefix}.attentions.0"), channels, resnet)?],
            None => Vec::new(),
        };
        Ok(Self {
            resnets,
            attentions,
        })
    }

    pub fn forward(&self, x: Tensor<4>, temb: &Tensor<2>) -> Tensor<4> {
        let mut x = self.resnets[0].forward(x, temb.clone());
        if let Some(attn) = self.attentions.first() {
            x = attn.forward(x);
        }
        self.resnets[1].forward(x, temb.clone())
    }
}

/// `UpBlock2D` (no attention) or `AttnUpBlock2D`.
#[derive(Debug, Clone)]
pub struct UpBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Attention>,
    pub upsampler: Option<Upsample2D>,
}

impl UpBlock2D {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        src: &mut impl TensorSource,
        prefix: &str,
        in_channels: usize,
        prev_output_channels: usize,
        out_channels: usize,
        num_layers: usize,
        resnet: ResnetOptions,
        attn: Option<AttnOptions>,
        add_upsample: bool,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(num_layers);
        let mut attentions = Vec::new();
        for i in 0..num_layers {
            let skip = if i == num_layers - 1 {
                in_channels
            } else {
                out_channels
            };
            let cin = if i == 0 {
                prev_output_channels
            } else {
                out_channels
            };
            resnets.push(ResnetBlock2D::load(
                src,
                &format!("{prefix}.resnets.{i}"),
                cin + skip,
                out_channels,
                resnet,
            )?);
            if let Some(a) = attn {
                attentions.push(a.load(
                    src,
                    &format!("{prefix}.attentions.{i}"),
                    out_channels,
                    resnet,
                )?);
            }
        }
        let upsampler = if add_upsample {
            Some(Upsample2D::load(
                src,
                &format!("{prefix}.upsamplers.0"),
                out_channels,
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            upsampler,
        })
    }

    /// Consumes one skip state per layer from the end of `skips`.
    pub fn forward(
        &self,
        mut x: Tensor<4>,
        temb: &Tensor<2>,
        skips: &mut Vec<Tensor<4>>,
    ) -> Tensor<4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .expect("skip stack holds one state per up-block layer");
            x = resnet.forward(Tensor::cat(vec![x, skip], 1), temb.clone());
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(x);
            }
        }
        if let Some(up) = &self.upsampler {
            x = up.forward(x);
        }
        x
    }
}
