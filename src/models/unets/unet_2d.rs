//! `UNet2DModel`: diffusers `models/unets/unet_2d.py`. The parameter paths are exactly the
//! diffusers state-dict names (`conv_in.weight`, `down_blocks.1.attentions.0.to_q.weight`, ...).

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::unet_2d_blocks::{
    AttnOptions, DownBlock2D, DownBlock2DConfig, UNetMidBlock2D, UpBlock2D, UpBlock2DConfig,
};
use super::UNet2DConfig;
use crate::error::{Error, Result};
use crate::models::embeddings::{per_item_timesteps, TimestepEmbedding, Timesteps};
use crate::models::layers::{Conv2d, Conv2dConfig, GroupNorm};
use crate::models::resnet::{ResnetOptions, TimeScaleShift};
use crate::weights::TensorSource;

/// Named intermediate activations, recorded by [`UNet2DModel::forward_traced`] for parity tests.
pub type Trace = Vec<(String, Tensor<4>)>;

#[derive(Debug, Clone)]
pub struct UNet2DModel {
    pub config: UNet2DConfig,
    pub conv_in: Conv2d,
    pub time_proj: Timesteps,
    pub time_embedding: TimestepEmbedding,
    /// `nn.Embedding(num_class_embeds, time_embed_dim)` weight, for class-conditional models.
    pub class_embedding: Option<Tensor<2>>,
    pub down_blocks: Vec<DownBlock2D>,
    pub mid_block: Option<UNetMidBlock2D>,
    pub up_blocks: Vec<UpBlock2D>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
    device: Device,
}

impl UNet2DModel {
    /// Builds the U-Net, taking every parameter from `src` by its diffusers name.
    /// The config must have been validated ([`UNet2DConfig::validate`]).
    pub fn load(
        config: &UNet2DConfig,
        src: &mut impl TensorSource,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let ch = &config.block_out_channels;
        let temb = config.time_embed_dim();
        let groups = config.groups();
        let eps = config.norm_eps;
        let resnet = ResnetOptions {
            temb_channels: Some(temb),
            groups,
            eps,
            time_shift: config.resnet_time_scale_shift,
            output_scale_factor: 1.0,
        };
        // 1. time
        let time_proj = Timesteps {
            num_channels: ch[0],
            flip_sin_to_cos: config.flip_sin_to_cos,
            downscale_freq_shift: config.freq_shift,
        };
        let time_embedding = TimestepEmbedding::load(src, "time_embedding", ch[0], temb)?;
        let class_embedding = match config.num_class_embeds {
            Some(k) => Some(src.get("class_embedding.weight", [k, temb])?),
            None => None,
        };

        // 2. pre-process
        let conv_in = Conv2d::load(
            src,
            "conv_in",
            Conv2dConfig::same(config.in_channels, ch[0], 3),
        )?;

        // 3-5. down, mid, up
        let down_blocks = Self::load_down_blocks(config, src, resnet)?;
        let mid_block = Self::load_mid_block(config, src, resnet)?;
        let up_blocks = Self::load_up_blocks(config, src, resnet)?;

        // 6. post-process
        let conv_norm_out = GroupNorm::load(src, "conv_norm_out", groups, ch[0], eps)?;
        let conv_out = Conv2d::load(
            src,
            "conv_out",
            Conv2dConfig::same(ch[0], config.out_channels, 3),
        )?;

        Ok(Self {
            config: config.clone(),
            conv_in,
            time_proj,
            time_embedding,
            class_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            device: device.clone(),
        })
    }

    /// Attention of a block with `channels` channels.
    fn attn_options(config: &UNet2DConfig, channels: usize) -> AttnOptions {
        AttnOptions {
            head_dim: config.attention_head_dim.unwrap_or(channels),
            groups: Some(config.groups()),
            eps: config.norm_eps,
        }
    }

    /// `down_blocks.{i}`: level i halves the image after its layers, but the last.
    fn load_down_blocks(
        config: &UNet2DConfig,
        src: &mut impl TensorSource,
        resnet: ResnetOptions,
    ) -> Result<Vec<DownBlock2D>> {
        let ch = &config.block_out_channels;
        let n = ch.len();
        let mut blocks = Vec::with_capacity(n);
        for (i, kind) in config.down_block_types.iter().enumerate() {
            let c = DownBlock2DConfig {
                in_channels: if i == 0 { ch[0] } else { ch[i - 1] },
                out_channels: ch[i],
                num_layers: config.layers_per_block,
                resnet,
                attn: kind
                    .has_attention()
                    .then(|| Self::attn_options(config, ch[i])),
                add_downsample: i + 1 < n,
                downsample_padding: config.downsample_padding,
                downsampler: kind.downsampler(config.downsample_type),
            };
            blocks.push(DownBlock2D::load(src, &format!("down_blocks.{i}"), c)?);
        }
        Ok(blocks)
    }

    /// `mid_block` at the deepest level, when the config has one.
    fn load_mid_block(
        config: &UNet2DConfig,
        src: &mut impl TensorSource,
        resnet: ResnetOptions,
    ) -> Result<Option<UNetMidBlock2D>> {
        if config.mid_block_type.is_none() {
            return Ok(None);
        }
        let c = config.block_out_channels[config.block_out_channels.len() - 1];
        let attn = config.add_attention.then(|| AttnOptions {
            // diffusers drops the mid attention's norm for scale-shift models unless given.
            groups: config
                .attn_norm_num_groups
                .or((resnet.time_shift == TimeScaleShift::Default).then_some(config.groups())),
            ..Self::attn_options(config, c)
        });
        let resnet = ResnetOptions {
            output_scale_factor: config.mid_block_scale_factor,
            ..resnet
        };
        Ok(Some(UNetMidBlock2D::load(
            src,
            "mid_block",
            c,
            resnet,
            attn,
        )?))
    }

    /// `up_blocks.{i}`, from the deepest level up: each layer takes a skip state, each block
    /// but the last doubles the image.
    fn load_up_blocks(
        config: &UNet2DConfig,
        src: &mut impl TensorSource,
        resnet: ResnetOptions,
    ) -> Result<Vec<UpBlock2D>> {
        let rev: Vec<usize> = config.block_out_channels.iter().rev().copied().collect();
        let n = rev.len();
        let mut blocks = Vec::with_capacity(n);
        for (i, kind) in config.up_block_types.iter().enumerate() {
            let c = UpBlock2DConfig {
                in_channels: rev[(i + 1).min(n - 1)],
                prev_output_channels: if i == 0 { rev[0] } else { rev[i - 1] },
                out_channels: rev[i],
                num_layers: config.layers_per_block + 1,
                resnet,
                attn: kind
                    .has_attention()
                    .then(|| Self::attn_options(config, rev[i])),
                add_upsample: i + 1 < n,
                upsampler: kind.upsampler(config.upsample_type),
            };
            blocks.push(UpBlock2D::load(src, &format!("up_blocks.{i}"), c)?);
        }
        Ok(blocks)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Predicts the model output (noise, sample or v, per the scheduler's prediction type).
    ///
    /// `sample: [B, in_channels, H, W]`, `timesteps`: one per batch item (or one for all),
    /// `class_labels`: one per batch item for class-conditional models, else `None`.
    /// Returns `[B, out_channels, H, W]`.
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        class_labels: Option<&[usize]>,
    ) -> Result<Tensor<4>> {
        self.forward_traced(sample, timesteps, class_labels, None)
    }

    /// [`forward`](Self::forward), recording the named intermediate activations into `trace`.
    pub fn forward_traced(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        class_labels: Option<&[usize]>,
        mut trace: Option<&mut Trace>,
    ) -> Result<Tensor<4>> {
        let [b, c, h, w] = sample.dims();
        self.check_input(b, c, h, w)?;
        let mut record = |name: &str, t: &Tensor<4>| {
            if let Some(tr) = trace.as_deref_mut() {
                tr.push((name.to_string(), t.clone()));
            }
        };
        let as4 = |t: &Tensor<2>| {
            let [b, d] = t.dims();
            t.clone().reshape([b, d, 1, 1])
        };

        let mut sample = sample;
        if self.config.center_input_sample {
            sample = sample * 2.0 - 1.0;
        }

        // 1. time
        let timesteps = per_item_timesteps(timesteps, b)?;
        let t_emb = self.time_proj.forward(&timesteps, &self.device);
        record("time_proj", &as4(&t_emb));
        let mut emb = self.time_embedding.forward(t_emb);
        record("time_embedding", &as4(&emb));
        if let Some(class_emb) = self.class_embed(class_labels, b)? {
            record("class_embedding", &as4(&class_emb));
            emb = emb + class_emb;
        }

        // 2. pre-process
        let mut x = self.conv_in.forward(sample);
        record("conv_in", &x);
        let mut skips = vec![x.clone()];

        // 3. down
        for (i, block) in self.down_blocks.iter().enumerate() {
            x = block.forward(x, Some(&emb), &mut skips);
            record(&format!("down_blocks.{i}"), &x);
        }

        // 4. mid
        if let Some(mid) = &self.mid_block {
            x = mid.forward(x, Some(&emb));
            record("mid_block", &x);
        }

        // 5. up
        for (i, block) in self.up_blocks.iter().enumerate() {
            x = block.forward(x, Some(&emb), &mut skips);
            record(&format!("up_blocks.{i}"), &x);
        }

        // 6. post-process
        let x = self.conv_out.forward(self.conv_norm_out.forward_silu(x));
        Ok(x)
    }

    /// The class embedding of `labels` (`[B, time_embed_dim]`) for a class-conditional model;
    /// labels must be given exactly when the model has a class embedding.
    fn class_embed(&self, labels: Option<&[usize]>, b: usize) -> Result<Option<Tensor<2>>> {
        let (table, labels) = match (&self.class_embedding, labels) {
            (Some(table), Some(labels)) => (table, labels),
            (None, None) => return Ok(None),
            (Some(_), None) => {
                return Err(Error::invalid(
                    "class_labels: this model is class-conditional, expected one label per image, found none",
                ))
            }
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "class_labels: this model has no class embedding, expected no labels, found some",
                ))
            }
        };
        let k = table.dims()[0];
        if labels.len() != b {
            return Err(Error::invalid(format!(
                "class_labels: expected {b} labels (one per batch item), found {}",
                labels.len()
            )));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l >= k) {
            return Err(Error::invalid(format!(
                "class label: expected 0 to {}, found {bad}",
                k - 1
            )));
        }
        let ids: Vec<i32> = labels.iter().map(|&l| l as i32).collect();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [b]), &self.device);
        Ok(Some(table.clone().select(0, ids)))
    }

    fn check_input(&self, b: usize, c: usize, h: usize, w: usize) -> Result<()> {
        if c != self.config.in_channels {
            return Err(Error::invalid(format!(
                "sample: expected {} channels, found {c}",
                self.config.in_channels
            )));
        }
        if b == 0 {
            return Err(Error::invalid(
                "sample: expected a batch of at least 1, found 0",
            ));
        }
        let factor = 1usize << (self.config.block_out_channels.len() - 1);
        if h % factor != 0 || w % factor != 0 || h == 0 || w == 0 {
            return Err(Error::invalid(format!(
                "sample: expected height and width divisible by {factor} (one halving per down block), found {h}x{w}"
            )));
        }
        Ok(())
    }
}
