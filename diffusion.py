"""Gaussian diffusion: the noise schedule, the training loss, the DDPM/DDIM/DPM-Solver++ samplers.

The network is passed in as `model_fn(x_t, t)` (a UNet, or a lambda that adds `cond` for
super-resolution), so this file knows nothing about architectures, files or devices beyond
the tensors it is given. Used by train_gen.py, sample.py and superres.py:

    from diffusion import GaussianDiffusion, ema_update
    diffusion = GaussianDiffusion(timesteps=1000, beta_schedule='linear', objective='eps')
    loss = diffusion.training_loss(model, x0, torch.randint(0, 1000, (B,)))     # Algorithm 1
    x0 = diffusion.p_sample_loop(model, (B, C, H, W), device='cuda')            # Algorithm 2
    x0 = diffusion.ddim_sample_loop(model, (B, C, H, W), 50, eta=0.0)           # DDIM
    x0 = diffusion.dpm_solver_sample_loop(model, (B, C, H, W), 20)              # DPM-Solver++(2M)

Notation (Ho et al.): beta_t the per-step noise variance, alpha_t = 1 - beta_t,
abar_t = prod_{s<=t} alpha_s. Timesteps are 0-indexed here, t in [0, T): index 0 is the paper's
t = 1. model_fn always sees these original indices, also under DDIM's shortened schedules.

References:
    Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models" (eqs. 4, 6, 7, 11, 14, 15;
        Algorithms 1 and 2)
    Song, Meng, Ermon 2021, "Denoising Diffusion Implicit Models" (eqs. 12, 16)
    Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models" (eq. 17)
    Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of ..." (Algorithm 2, 2M)
    openai/improved-diffusion improved_diffusion/gaussian_diffusion.py (names and structure)
    hojonathanho/diffusion diffusion_tf/diffusion_utils_2.py (float64 schedule, clipping)
"""
import math

import numpy as np
import torch
import torch.nn.functional as F


def extract(a, t, x_shape):
    """Gather a[t] for a (T,) schedule tensor and reshape to (B, 1, 1, ...) to broadcast over x."""
    out = a.to(t.device)[t]  # (B,); a no-op move once GaussianDiffusion.to(device) has run
    return out.reshape(t.shape[0], *((1,) * (len(x_shape) - 1)))


def randn(shape, generator, device):
    """Standard normal noise; generator = None | torch.Generator | list of B torch.Generators.
    With a list, row i comes from generator i alone (sample.py: seed + i), whatever its batch;
    generators live on CPU and the noise moves to `device` after: the same samples on any device."""
    if generator is None:
        return torch.randn(shape, device=device)
    if isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator).to(device)
    assert len(generator) == shape[0], f'{len(generator)} generators for a batch of {shape[0]}'
    return torch.stack([torch.randn(shape[1:], generator=g) for g in generator]).to(device)


class GaussianDiffusion:

    def __init__(self, *, timesteps=1000, beta_schedule='linear', objective='eps',
                 loss_weighting='none', snr_gamma=5.0, self_condition=False):
        """objective: what the network predicts, 'eps' (the paper), 'x0' or 'v' (Salimans & Ho
        2022: v = sqrt(abar) eps - sqrt(1 - abar) x0). loss_weighting: 'none' (L_simple) or
        'min_snr' (Hang et al. 2023: each t weighted so that the loss is the x0 error times
        min(SNR_t, snr_gamma)). self_condition: the network also sees its own previous x0
        estimate (Chen et al. 2022, Analog Bits), as model_fn(x_t, t, x_self=...)."""
        assert beta_schedule in {'linear', 'cosine'}, f'unknown beta_schedule {beta_schedule!r}'
        assert objective in {'eps', 'x0', 'v'}, f'unknown objective {objective!r}'
        assert loss_weighting in {'none', 'min_snr'}, f'unknown loss_weighting {loss_weighting!r}'
        T = self.num_timesteps = timesteps
        self.objective = objective
        self.loss_weighting, self.snr_gamma = loss_weighting, snr_gamma
        self.self_condition = self_condition
        # float64 maths, float32 storage: 1 - abar_t and 1000-alpha products lose digits in fp32
        if beta_schedule == 'linear':
            # Ho et al. Sec. 4: 1e-4 to 0.02 over T = 1000. Other T scale both ends by 1000 / T
            # (improved-diffusion), so x_{T-1} is still pure noise in a tiny config's few steps.
            scale = 1000 / T
            betas = np.linspace(scale * 1e-4, scale * 2e-2, T, dtype=np.float64)
        else:
            # Nichol & Dhariwal eq. 17: abar(t) = f(t) / f(0), f(t) = cos^2((t/T + s)/(1 + s) pi/2),
            # s = 0.008, beta_t = 1 - abar(t+1) / abar(t): slower than linear at low resolution
            f = np.cos((np.arange(T + 1, dtype=np.float64) / T + 0.008) / 1.008 * math.pi / 2) ** 2
            betas = 1 - f[1:] / f[:-1]
        # Clip at 0.999 (improved-diffusion): beta = 1 makes 1 / sqrt(abar) infinite; cosine's
        # last beta and the scaled linear betas of a very small T would reach it.
        betas = np.clip(betas, 0.0, 0.999)
        alphas_cumprod = np.cumprod(1.0 - betas)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])  # abar_{t-1}, with abar_{-1} = 1
        # Posterior q(x_{t-1} | x_t, x0) = N(mean, var), Ho et al. eqs. 6-7:
        #   var  = beta_t (1 - abar_{t-1}) / (1 - abar_t)                    (beta tilde)
        #   mean = beta_t sqrt(abar_{t-1}) / (1 - abar_t) x0 + (1 - abar_{t-1}) sqrt(alpha_t) /
        #          (1 - abar_t) x_t
        post_var = betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)
        f32 = lambda a: torch.tensor(a, dtype=torch.float32)
        self.betas = f32(betas)
        self.alphas_cumprod = f32(alphas_cumprod)
        self.alphas_cumprod_prev = f32(alphas_cumprod_prev)
        self.sqrt_alphas_cumprod = f32(np.sqrt(alphas_cumprod))
        self.sqrt_one_minus_alphas_cumprod = f32(np.sqrt(1 - alphas_cumprod))
        self.sqrt_recip_alphas_cumprod = f32(np.sqrt(1 / alphas_cumprod))
        self.sqrt_recipm1_alphas_cumprod = f32(np.sqrt(1 / alphas_cumprod - 1))
        self.posterior_variance = f32(post_var)
        self.snr = f32(alphas_cumprod / (1 - alphas_cumprod))  # SNR_t, for min_snr
        # log var is clipped to var[1] at t = 0 (var = 0 there; the last step adds no noise)
        self.posterior_log_variance_clipped = f32(np.log(np.append(post_var[1], post_var[1:])))
        self.posterior_mean_coef1 = f32(betas * np.sqrt(alphas_cumprod_prev) / (1 - alphas_cumprod))
        self.posterior_mean_coef2 = f32(
            (1 - alphas_cumprod_prev) * np.sqrt(1 - betas) / (1 - alphas_cumprod))

    def to(self, device):
        """Move the schedule to `device` once (in place; returns self): a per-call CPU -> GPU copy
        in extract() would make the host wait for the GPU at every step."""
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor) and value.device != torch.device(device):
                setattr(self, name, value.to(device))
        return self

    def q_sample(self, x0, t, noise):
        """Forward process in closed form, Ho et al. eq. 4: sqrt(abar_t) x0 + sqrt(1-abar_t) eps."""
        return (extract(self.sqrt_alphas_cumprod, t, x0.shape) * x0
                + extract(self.sqrt_one_minus_alphas_cumprod, t, x0.shape) * noise)

    def predict_start_from_noise(self, x_t, t, eps):
        """Eq. 4 solved for x0 (Ho et al. eq. 15): x_t / sqrt(abar_t) - sqrt(1/abar_t - 1) eps."""
        return (extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
                - extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps)

    def predict_noise_from_start(self, x_t, t, x0):
        """Eq. 4 solved for eps: eps = (x_t / sqrt(abar_t) - x0) / sqrt(1/abar_t - 1)."""
        return ((extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - x0)
                / extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape))

    def q_posterior_mean_variance(self, x0, x_t, t):
        """Mean, variance and log-variance of q(x_{t-1} | x_t, x0), Ho et al. eqs. 6-7."""
        mean = (extract(self.posterior_mean_coef1, t, x_t.shape) * x0
                + extract(self.posterior_mean_coef2, t, x_t.shape) * x_t)
        var = extract(self.posterior_variance, t, x_t.shape)
        log_var = extract(self.posterior_log_variance_clipped, t, x_t.shape)
        return mean, var, log_var

    def predict_start(self, x_t, t, out):
        """The x0 that the network's output `out` implies, whatever the objective:
        eps: eq. 15; x0: out itself; v: x0 = sqrt(abar) x_t - sqrt(1 - abar) v (Salimans & Ho
        2022, Sec. 4: x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, and sqrt(abar)^2 + sqrt(1 -
        abar)^2 = 1)."""
        if self.objective == 'eps':
            return self.predict_start_from_noise(x_t, t, out)
        if self.objective == 'v':
            return (extract(self.sqrt_alphas_cumprod, t, x_t.shape) * x_t
                    - extract(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape) * out)
        return out

    def target(self, x0, t, noise):
        """What the network is trained to output at (x0, t, noise), for each objective."""
        if self.objective == 'eps':
            return noise
        if self.objective == 'v':
            return (extract(self.sqrt_alphas_cumprod, t, x0.shape) * noise
                    - extract(self.sqrt_one_minus_alphas_cumprod, t, x0.shape) * x0)
        return x0

    def snr_weight(self, t):
        """(B,) loss weight of each t: 1 ('none'), or min-SNR-gamma (Hang et al. 2023, eq. 7 and
        Sec. 3.4) written for the objective: the x0 error weighted by min(SNR, gamma) is
        min(SNR, gamma) / SNR times the eps error and min(SNR, gamma) / (SNR + 1) times the v
        error, SNR_t = abar_t / (1 - abar_t)."""
        if self.loss_weighting == 'none':
            return torch.ones(t.shape, device=t.device)
        snr = self.snr.to(t.device)[t].double()
        clipped = snr.clamp(max=self.snr_gamma)
        weight = {'eps': clipped / snr, 'x0': clipped, 'v': clipped / (snr + 1)}[self.objective]
        return weight.float()

    def self_conditioned(self, model_fn):
        """model_fn for a sampler: with self_condition, each call also gets the x0 estimate of
        the call before (clipped; none at the first call, which the UNet reads as zeros), as
        Chen et al. sample; without, model_fn itself."""
        if not self.self_condition:
            return model_fn
        previous = {}

        def fn(x_t, t):
            out = model_fn(x_t, t, **previous)
            previous['x_self'] = self.predict_start(x_t, t, out.float()).clamp(-1, 1)
            return out
        return fn

    def model_predictions(self, model_fn, x_t, t):
        """Run the network and return (pred_x0 clipped to [-1, 1], eps consistent with it)."""
        out = model_fn(x_t, t).float()  # float32 maths even if the model ran under bf16 autocast
        pred_x0 = self.predict_start(x_t, t, out)
        # Data lie in [-1, 1], so Ho et al. clip the predicted x0 there when sampling
        # (hojonathanho clip_denoised=True); eps is then recomputed from the clipped x0 (as
        # improved-diffusion's DDIM does) so that both views of the prediction agree.
        pred_x0 = pred_x0.clamp(-1, 1)
        return pred_x0, self.predict_noise_from_start(x_t, t, pred_x0)

    def p_mean_variance(self, model_fn, x_t, t):
        """p_theta(x_{t-1} | x_t): eqs. 6-7 with the predicted x0 (eq. 11's mean for eps, up to the
        clipping), variance fixed to beta tilde (Ho et al. report beta_t and beta tilde alike)."""
        pred_x0, _ = self.model_predictions(model_fn, x_t, t)
        mean, var, log_var = self.q_posterior_mean_variance(pred_x0, x_t, t)
        return dict(mean=mean, variance=var, log_variance=log_var, pred_x0=pred_x0)

    @torch.no_grad()
    def p_sample(self, model_fn, x_t, t, generator=None):
        """One ancestral step x_t -> x_{t-1}, Ho et al. Algorithm 2 line 4 (no noise at t = 0)."""
        out = self.p_mean_variance(model_fn, x_t, t)
        noise = randn(x_t.shape, generator, x_t.device)
        nonzero = (t != 0).float().reshape(-1, *((1,) * (x_t.dim() - 1)))  # (B, 1, 1, 1)
        return out['mean'] + nonzero * torch.exp(0.5 * out['log_variance']) * noise

    @torch.no_grad()
    def p_sample_loop(self, model_fn, shape, *, generator=None, device='cpu', noise=None,
                      progress=False):
        """Ho et al. Algorithm 2: from x_{T-1} ~ N(0, I) (or `noise`), all T ancestral steps.
        progress: True prints ~10 lines, a callable gets (step, steps)."""
        self.to(device)
        model_fn = self.self_conditioned(model_fn)
        x = noise.to(device) if noise is not None else randn(shape, generator, device)
        T = self.num_timesteps
        for i, step in enumerate(reversed(range(T))):
            t = torch.full((shape[0],), step, device=device, dtype=torch.long)
            x = self.p_sample(model_fn, x, t, generator)
            _report(progress, i + 1, T)
        return x

    def ddim_timesteps(self, steps):
        """`steps` evenly spaced indices from T-1 down to 0, both ends included: unlike
        improved-diffusion's range(0, T, T // steps), it starts from pure noise and ends at t = 0,
        whose posterior is x0 itself. steps = 1 is the single jump from T-1 to x0."""
        T = self.num_timesteps
        assert 1 <= steps <= T, f'DDIM steps must be in [1, {T}], got {steps}'
        if steps == 1:
            return [T - 1]
        return np.round(np.linspace(0, T - 1, steps)).astype(int)[::-1].tolist()

    @torch.no_grad()
    def ddim_sample(self, model_fn, x_t, t, t_prev, *, eta=0.0, generator=None):
        """One DDIM step x_t -> x_{t_prev} (t_prev = -1 means x0), Song et al. eqs. 12 and 16.

        x_prev = sqrt(abar_prev) x0_pred + sqrt(1 - abar_prev - sigma^2) eps_pred + sigma z,
        sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev).
        eta = 0 is the deterministic DDIM; eta = 1 with all T steps is DDPM's beta-tilde sampler.
        """
        pred_x0, eps = self.model_predictions(model_fn, x_t, t)
        abar = extract(self.alphas_cumprod, t, x_t.shape)
        # abar_{-1} = 1: the last step lands on the predicted x0 exactly.
        abar_prev = torch.where(t_prev >= 0, self.alphas_cumprod.to(t.device)[t_prev.clamp(min=0)],
                                torch.ones((), device=t.device))
        abar_prev = abar_prev.reshape(abar.shape)
        sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
        x_prev = abar_prev.sqrt() * pred_x0 + (1 - abar_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        if eta > 0:  # no draw at all for eta = 0, so the generator state stays untouched
            x_prev = x_prev + sigma * randn(x_t.shape, generator, x_t.device)
        return x_prev

    @torch.no_grad()
    def ddim_sample_loop(self, model_fn, shape, steps, *, eta=0.0, generator=None, device='cpu',
                         noise=None, progress=False):
        """Song et al. DDIM sampling with `steps` network calls (see ddim_timesteps)."""
        self.to(device)
        model_fn = self.self_conditioned(model_fn)
        x = noise.to(device) if noise is not None else randn(shape, generator, device)
        ts = self.ddim_timesteps(steps)
        for i, (step, prev) in enumerate(zip(ts, ts[1:] + [-1])):
            t = torch.full((shape[0],), step, device=device, dtype=torch.long)
            t_prev = torch.full((shape[0],), prev, device=device, dtype=torch.long)
            x = self.ddim_sample(model_fn, x, t, t_prev, eta=eta, generator=generator)
            _report(progress, i + 1, len(ts))
        return x

    def logsnr_timesteps(self, steps):
        """`steps` indices from T-1 down to 0, evenly spaced in lambda = log(alpha / sigma) (Lu et
        al. at low resolution), rounded to the nearest index and lifted where needed: distinct."""
        T, lam = self.num_timesteps, self.logsnr()
        assert 1 <= steps <= T, f'steps must be in [1, {T}], got {steps}'
        ts = [int(np.abs(lam - v).argmin()) for v in np.linspace(lam[-1], lam[0], steps)]
        ts = [min(max(t, steps - 1 - i), T - 1 - i) for i, t in enumerate(ts)]  # room for all
        for i in range(steps - 2, -1, -1):  # (near t = 0 several targets round to one index)
            ts[i] = max(ts[i], ts[i + 1] + 1)
        return ts

    def logsnr(self):
        """lambda_t = log(alpha_t / sigma_t) = log(abar_t / (1 - abar_t)) / 2, float64 numpy."""
        abar = self.alphas_cumprod.double().cpu().numpy()
        return 0.5 * np.log(abar / (1 - abar))  # increasing as t decreases

    @torch.no_grad()
    def dpm_solver_sample_loop(self, model_fn, shape, steps, *, generator=None, device='cpu',
                               noise=None, progress=False):
        """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): the probability-flow ODE in the data
        prediction, `steps` network calls on logsnr_timesteps. With h = lambda_next - lambda and
        r = h_prev / h: x_next = (sigma_next / sigma) x + alpha_next (1 - e^-h) D, where
        D = x0 + (x0 - x0_prev) / (2r), second order (D = x0 at the first step: DDIM's update).
        The last call (t = 0) returns its clipped x0, as DDIM does. The generator draws x_T only.
        """
        self.to(device)
        model_fn = self.self_conditioned(model_fn)
        x = noise.to(device) if noise is not None else randn(shape, generator, device)
        ts, lam = self.logsnr_timesteps(steps), self.logsnr()  # Python floats: no device syncs
        abar = self.alphas_cumprod.double().cpu().numpy()
        x0_prev = h_prev = None
        for i, (step, prev) in enumerate(zip(ts, ts[1:] + [-1])):
            t = torch.full((shape[0],), step, device=device, dtype=torch.long)
            x0, _ = self.model_predictions(model_fn, x, t)
            if prev < 0:  # the last call: its x0 is the sample
                x = x0
            else:
                h = lam[prev] - lam[step]
                D = x0 if x0_prev is None else x0 + (x0 - x0_prev) * float(h / (2 * h_prev))
                x = (float(np.sqrt((1 - abar[prev]) / (1 - abar[step]))) * x
                     + float(np.sqrt(abar[prev]) * -np.expm1(-h)) * D)
                x0_prev, h_prev = x0, h
            _report(progress, i + 1, len(ts))
        return x

    def sample(self, model_fn, shape, sampler='ddpm', steps=50, *, eta=0.0, generator=None,
               device='cpu'):
        """Sampler by name: 'ddpm' (all T ancestral steps, the paper), or `steps` network calls
        of 'ddim' or 'dpm++' (DPM-Solver++(2M))."""
        assert sampler in {'ddpm', 'ddim', 'dpm++'}, f"unknown sampler {sampler!r}"
        if sampler == 'ddpm':
            return self.p_sample_loop(model_fn, shape, generator=generator, device=device)
        if sampler == 'dpm++':
            return self.dpm_solver_sample_loop(model_fn, shape, steps, generator=generator,
                                               device=device)
        return self.ddim_sample_loop(model_fn, shape, steps, eta=eta, generator=generator,
                                     device=device)

    def training_loss(self, model_fn, x0, t, noise=None, weight=None, self_condition_rate=0.5):
        """Ho et al. Algorithm 1 / eq. 14 (L_simple): MSE between the target (see target(): the
        noise for 'eps', the paper) and the prediction; the mean over every element, or with a
        weight broadcastable to x0 (bits.loss_weight: 0 on the label channels of ignore pixels)
        sum(w * se) / sum(w). weight=None and loss_weighting='none' is the plain mean, exactly.
        min_snr multiplies each sample's squared error by snr_weight(t) (the normaliser stays
        sum(w)). self_condition: with probability self_condition_rate (Chen et al.: 0.5) the
        batch first gets the network's own x0 estimate, without gradient, as x_self."""
        self.to(x0.device)
        if noise is None:
            noise = torch.randn_like(x0)
        x_t = self.q_sample(x0, t, noise)
        target = self.target(x0, t, noise)
        extra = {}
        if self.self_condition and (self_condition_rate >= 1
                                    or torch.rand(()).item() < self_condition_rate):
            with torch.no_grad():  # Chen et al. Algorithm 1: stop_gradient of the estimate
                extra['x_self'] = self.predict_start(x_t, t, model_fn(x_t, t).float()).clamp(-1, 1)
        out = model_fn(x_t, t, **extra).float()
        if weight is None and self.loss_weighting == 'none':
            return F.mse_loss(out, target)
        if weight is None:
            weight = torch.ones((), device=x0.device)
        weight = torch.broadcast_to(weight.to(x0.device, torch.float32), x0.shape)
        squared_error = weight * (out - target).square()
        if self.loss_weighting == 'min_snr':
            squared_error = self.snr_weight(t).reshape(-1, *((1,) * (x0.dim() - 1))) * squared_error
        return squared_error.sum() / weight.sum()


def _report(progress, step, steps):
    if callable(progress):
        progress(step, steps)
    elif progress and (step == steps or step % max(1, steps // 10) == 0):
        print(f'sampling step {step}/{steps}', flush=True)


@torch.no_grad()
def ema_update(ema_model, model, decay):
    """ema <- decay * ema + (1 - decay) * param for every parameter; buffers are copied. The EMA
    is what gets sampled (Ho et al.: 0.9999); model is the raw module (not DDP / compiled)."""
    for e, p in zip(ema_model.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema_model.buffers(), model.buffers(), strict=True):
        e.copy_(b)
