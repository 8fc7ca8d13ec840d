"""GaussianDiffusion tests: schedule, closed forms, oracle recovery by both samplers, seeding."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bits
from diffusion import GaussianDiffusion, ema_update
from unet import UNet, UNetConfig

pytestmark = pytest.mark.usefixtures('one_thread')  # (conftest)


def oracle(diffusion, x0):
    """A perfect model for one known x0: the true eps of the x_t it receives (or x0 itself)."""
    abar = torch.tensor(np.cumprod(1 - np.linspace(1e-4, 2e-2, 1000)))  # float64, by hand

    def model_fn(x_t, t):
        assert t.dtype == torch.long and t.shape == (x_t.shape[0],)
        assert 0 <= t.min() and t.max() < diffusion.num_timesteps  # original indices
        if diffusion.objective == 'x0':
            return x0.clone()
        a = abar[t].reshape(-1, 1, 1, 1)
        return ((x_t.double() - a.sqrt() * x0.double()) / (1 - a).sqrt()).float()
    return model_fn


def test_linear_schedule():
    d = GaussianDiffusion()
    betas, abar = d.betas, d.alphas_cumprod
    assert betas.dtype == abar.dtype == torch.float32 and len(betas) == 1000
    assert math.isclose(betas[0].item(), 1e-4, rel_tol=1e-6)
    assert math.isclose(betas[-1].item(), 2e-2, rel_tol=1e-6)
    assert (betas[1:] > betas[:-1]).all() and (abar[1:] < abar[:-1]).all()
    assert (abar > 0).all() and (abar <= 1).all()
    # Computed in float64, then cast: exactly the float64 reference rounded once.
    ref = np.cumprod(1 - np.linspace(1e-4, 2e-2, 1000, dtype=np.float64))
    assert torch.equal(abar, torch.tensor(ref, dtype=torch.float32))
    assert abar[-1] < 1e-4  # x_{T-1} is (almost) pure noise
    # Fewer steps: endpoints scaled by 1000 / T so x_{T-1} is still noise.
    assert GaussianDiffusion(timesteps=50).alphas_cumprod[-1] < 1e-4
    moved = GaussianDiffusion().to('meta')  # .to moves every schedule tensor, returns self
    assert moved.betas.is_meta and moved.posterior_mean_coef2.is_meta


def test_cosine_schedule():
    d = GaussianDiffusion(beta_schedule='cosine')
    abar = d.alphas_cumprod
    assert (abar[1:] < abar[:-1]).all() and (abar > 0).all() and (abar <= 1).all()
    assert (d.betas <= 0.999).all()
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    assert math.isclose(abar[499].item(), f(500) / f(0), rel_tol=1e-5)  # Nichol & Dhariwal eq. 17
    assert abar[499] > GaussianDiffusion().alphas_cumprod[499]  # slower than linear mid-way
    with pytest.raises(AssertionError):
        GaussianDiffusion(beta_schedule='quadratic')
    with pytest.raises(AssertionError):
        GaussianDiffusion(objective='score')
    with pytest.raises(AssertionError):
        GaussianDiffusion(loss_weighting='p2')


def test_q_sample_at_t0_is_x0():
    d = GaussianDiffusion()
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1
    x_t = d.q_sample(x0, torch.zeros(4, dtype=torch.long), torch.randn_like(x0))
    assert (x_t - x0).abs().max() < 0.05  # sqrt(1 - abar_0) = 0.01 times the noise
    x_T = d.q_sample(x0, torch.full((4,), 999), torch.zeros_like(x0))
    assert x_T.abs().max() < 0.01  # sqrt(abar_{T-1}) ~ 0.006


def test_posterior_matches_closed_form():
    d = GaussianDiffusion()
    betas = np.linspace(1e-4, 2e-2, 1000)
    abar = np.cumprod(1 - betas)
    x0, x_t = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    t = torch.tensor([1, 500, 999])
    mean, var, log_var = d.q_posterior_mean_variance(x0, x_t, t)
    for i, ti in enumerate(t.tolist()):  # Ho et al. eq. 7, by hand in float64
        b, a, a_prev = betas[ti], abar[ti], abar[ti - 1]
        m = (b * math.sqrt(a_prev) / (1 - a) * x0[i].double()
             + (1 - a_prev) * math.sqrt(1 - b) / (1 - a) * x_t[i].double())
        v = b * (1 - a_prev) / (1 - a)
        torch.testing.assert_close(mean[i], m.float(), rtol=1e-5, atol=1e-6)
        assert math.isclose(var[i].max().item(), v, rel_tol=1e-5) and var[i].shape == (1, 1, 1)
        assert math.isclose(log_var[i].max().item(), math.log(v), rel_tol=1e-5)
    # p_mean_variance with the oracle: its mean is the true posterior mean.
    x0 = x0.clamp(-1, 1)
    out = d.p_mean_variance(oracle(d, x0), x_t, t)
    torch.testing.assert_close(out['pred_x0'], x0, atol=1e-3, rtol=0)
    torch.testing.assert_close(out['mean'], d.q_posterior_mean_variance(x0, x_t, t)[0], atol=1e-3,
                               rtol=0)
    # predict_start_from_noise inverts q_sample.
    eps = torch.randn_like(x0)
    back = d.predict_start_from_noise(d.q_sample(x0, t, eps), t, eps)
    torch.testing.assert_close(back, x0, atol=2e-4, rtol=0)


@pytest.mark.parametrize('objective', ['eps', 'x0'])
def test_oracle_recovery(objective):
    d = GaussianDiffusion(objective=objective)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 4, 4, generator=g) * 2 - 1
    x = d.p_sample_loop(oracle(d, x0), x0.shape, generator=g)  # all T = 1000 ancestral steps
    assert (x - x0).abs().max() < 1e-4
    for steps, eta in [(1000, 0.0), (50, 0.0), (10, 0.0), (3, 0.0), (10, 1.0)]:
        x = d.ddim_sample_loop(oracle(d, x0), x0.shape, steps, eta=eta, generator=g)
        assert (x - x0).abs().max() < 1e-4, (steps, eta)


@pytest.mark.parametrize('objective', ['eps', 'x0'])
def test_dpm_solver_oracle_recovery(objective):
    d = GaussianDiffusion(objective=objective)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 4, 4, generator=g) * 2 - 1
    for steps in (10, 20):
        x = d.sample(oracle(d, x0), x0.shape, 'dpm++', steps, generator=g)
        assert (x - x0).abs().max() < 1e-4, steps


def test_dpm_solver_is_second_order_on_gaussian_data():
    """Data x0 ~ N(mu, s^2) per element has an exact denoiser E[x0 | x_t] (linear in x_t) and an
    exact probability-flow ODE: the standardised (x_t - a mu) / sqrt(a^2 s^2 + sigma^2) stays z.
    Both samplers are deterministic ODE solvers, so their error is the discretisation's."""
    d = GaussianDiffusion(objective='x0')
    mu, s, abar = 0.1, 0.25, d.alphas_cumprod.double()

    def denoiser(x, t):
        a, var = abar[t].sqrt().reshape(-1, 1, 1, 1), 1 - abar[t].reshape(-1, 1, 1, 1)
        return (mu + a * s * s / (a * a * s * s + var) * (x.double() - a * mu)).float()

    z = torch.linspace(-2, 2, 64).reshape(1, 1, 8, 8)  # within [-1, 1] after mu + s z: no clip
    end = lambda t: (abar[t].sqrt(), (abar[t] * s * s + 1 - abar[t]).sqrt())  # a, sd of x_t
    (aT, sdT), (a0, sd0) = end(-1), end(0)
    x_T = (aT * mu + sdT * z).float()
    want = mu + a0 * s * s / sd0 * z  # the denoiser at the ODE's exact x_{t=0}
    err = lambda loop, n: (getattr(d, loop)(denoiser, x_T.shape, n, noise=x_T).double()
                           - want).abs().max().item()
    ddim = {n: err('ddim_sample_loop', n) for n in (10, 50)}
    dpm = {n: err('dpm_solver_sample_loop', n) for n in (10, 20, 50, 100)}
    # measured: DDIM 0.22 (10), 0.049 (50); DPM-Solver++(2M) 0.012, 0.0076, 0.0012, 0.00029
    assert dpm[10] < ddim[50] / 2 and dpm[20] < ddim[50] / 4
    assert dpm[100] < dpm[50] / 2.5 < dpm[10] / 2.5 ** 2  # ~h^2: 2x the steps, ~1/4 the error


def test_logsnr_timesteps():
    d = GaussianDiffusion()
    for steps in (1000, 100, 20, 10, 2):
        ts = d.logsnr_timesteps(steps)
        assert len(ts) == steps and ts[0] == 999 and ts[-1] == 0
        assert all(a > b for a, b in zip(ts, ts[1:]))  # distinct: no zero-length step


def test_ddim_timesteps():
    d = GaussianDiffusion()
    for steps in (1000, 50, 10, 3, 2):
        ts = d.ddim_timesteps(steps)
        assert len(ts) == steps and ts[0] == 999 and ts[-1] == 0
        assert all(a > b for a, b in zip(ts, ts[1:]))
    assert d.ddim_timesteps(1) == [999]
    with pytest.raises(AssertionError):
        d.ddim_timesteps(1001)


def test_ddim_eta0_deterministic_and_generator_lists():
    d = GaussianDiffusion(timesteps=40)
    model_fn = lambda x, t: torch.tanh(x) * (1 + t.float().reshape(-1, 1, 1, 1) / 40)
    noise = torch.randn(3, 2, 4, 4)
    a = d.ddim_sample_loop(model_fn, noise.shape, 8, generator=torch.Generator().manual_seed(1),
                           noise=noise)
    b = d.ddim_sample_loop(model_fn, noise.shape, 8, generator=torch.Generator().manual_seed(2),
                           noise=noise)
    assert torch.equal(a, b)
    # Per-sample generators: sample i depends only on its own seed, whatever the batch.
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]
    for loop in (lambda shape, g: d.p_sample_loop(model_fn, shape, generator=g),
                 lambda shape, g: d.ddim_sample_loop(model_fn, shape, 5, eta=1.0, generator=g)):
        batch = loop((3, 2, 4, 4), gens([10, 11, 12]))
        alone = loop((1, 2, 4, 4), gens([11]))
        torch.testing.assert_close(batch[1:2], alone, atol=1e-6, rtol=0)
        assert not torch.allclose(batch[0], batch[1])


def test_training_loss():
    d = GaussianDiffusion(objective='x0')
    x0, t = torch.rand(2, 3, 4, 4) * 2 - 1, torch.tensor([3, 900])
    assert d.training_loss(lambda x, t: x0, x0, t).item() == 0.0  # perfect x0 prediction
    noise = torch.randn_like(x0)
    zero = lambda x, t: torch.zeros_like(x)
    loss = GaussianDiffusion().training_loss(zero, x0, t, noise)
    assert math.isclose(loss.item(), noise.square().mean().item(), rel_tol=1e-6)


def test_training_loss_weight_leaves_out_ignore_label_pixels():
    """bits.loss_weight -> training_loss: the label channels of an uncoded ignore pixel do not
    count; its image channels and every valid pixel do; no weight is the plain mean, exactly."""
    m = {'num_classes': 8, 'ignore_index': 255, 'codes': dict(num_codes=8, ignore_code=None)}
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    mask = rng.integers(0, 8, (2, 4, 4)).astype(np.uint8)
    mask[0, 1, 2] = 255
    x0, w = bits.pack(img, mask, m), bits.loss_weight(mask, m)
    d, t, noise = GaussianDiffusion(objective='x0'), torch.tensor([5, 700]), torch.randn(2, 6, 4, 4)
    pred = torch.rand(2, 6, 4, 4) * 2 - 1
    loss = lambda p, x=x0, w=w: d.training_loss(lambda x_t, t: p, x, t, noise, w).item()
    base = loss(pred)
    for ch, changed in [(4, False), (1, True)]:  # a label channel, an image channel
        p = pred.clone()
        p[0, ch, 1, 2] += 0.7
        assert (loss(p) != base) == changed
        x = x0.clone()
        x[0, ch, 1, 2] *= -1  # the target there, too
        assert (loss(pred, x) != base) == changed
    p = pred.clone()
    p[0, 4, 1, 1] += 0.7  # the label channel of a valid pixel
    assert loss(p) != base
    se = (pred - x0).square()
    keep = torch.ones_like(se, dtype=torch.bool)
    keep[0, 3:, 1, 2] = False
    assert math.isclose(base, se[keep].mean().item(), rel_tol=1e-6)
    assert loss(pred, w=None) == F.mse_loss(pred, x0).item()  # bit-identical without a weight
    assert math.isclose(loss(pred, w=torch.ones(1, 6, 1, 1)), loss(pred, w=None), rel_tol=1e-6)


def test_tiny_unet_overfits_one_batch():
    torch.manual_seed(0)
    d = GaussianDiffusion()
    model = UNet(UNetConfig(image_size=8, in_channels=4, out_channels=4, n_ch=16, ch_mult=(1, 2),
                            n_res_blocks=1, attn_res=(4,), n_heads=2, dropout=0.0))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x0, t = torch.rand(4, 4, 8, 8) * 2 - 1, torch.randint(0, 1000, (4,))
    noise = torch.randn_like(x0)
    losses = []
    for _ in range(30):
        loss = d.training_loss(model, x0, t, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_ema_update():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    model[1].running_mean.fill_(0.7)
    old = [p.detach().clone() for p in ema.parameters()]
    ema_update(ema, model, 0.9)
    for e, o, p in zip(ema.parameters(), old, model.parameters()):
        torch.testing.assert_close(e, 0.9 * o + 0.1 * p)
        assert not e.requires_grad or e.grad is None
    assert torch.equal(ema[1].running_mean, torch.full((2,), 0.7))
    ema_update(ema, model, 0.0)  # decay 0 copies the weights
    for e, p in zip(ema.parameters(), model.parameters()):
        torch.testing.assert_close(e, p)


def test_sample_dispatches_by_name():
    d = GaussianDiffusion(timesteps=20)
    x0 = torch.rand(2, 3, 4, 4) * 2 - 1
    g = lambda: [torch.Generator().manual_seed(i) for i in range(2)]
    torch.testing.assert_close(d.sample(oracle20(d, x0), x0.shape, 'ddim', 5, generator=g()),
                               d.ddim_sample_loop(oracle20(d, x0), x0.shape, 5, generator=g()))
    torch.testing.assert_close(d.sample(oracle20(d, x0), x0.shape, 'ddpm', generator=g()),
                               d.p_sample_loop(oracle20(d, x0), x0.shape, generator=g()))
    with pytest.raises(AssertionError, match='unknown sampler'):
        d.sample(oracle20(d, x0), x0.shape, 'euler')


def oracle20(d, x0):
    """The true eps for x0 under d's own schedule (any T)."""
    return lambda x_t, t: d.predict_noise_from_start(x_t, t, x0)


# --- issue 21's knobs: v-prediction, min-SNR weighting, self-conditioning -------------------------
def test_v_target_algebra_against_eps_and_x0():
    """v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho), and every objective's target maps
    back to the true x0 through predict_start, so the samplers see the same x0 whatever the
    objective."""
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 3, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    abar = torch.tensor(np.cumprod(1 - np.linspace(1e-4, 2e-2, 1000)))[t].reshape(-1, 1, 1, 1)
    v_by_hand = (abar.sqrt() * noise.double() - (1 - abar).sqrt() * x0.double()).float()
    for objective in ('eps', 'x0', 'v'):
        d = GaussianDiffusion(objective=objective)
        x_t = d.q_sample(x0, t, noise)
        target = d.target(x0, t, noise)
        want = {'eps': noise, 'x0': x0, 'v': v_by_hand}[objective]
        torch.testing.assert_close(target, want, atol=1e-5, rtol=0)
        torch.testing.assert_close(d.predict_start(x_t, t, target), x0, atol=2e-3, rtol=0)
    # v also recovers eps: eps = sqrt(1 - abar) x_t + sqrt(abar) v
    x_t = GaussianDiffusion().q_sample(x0, t, noise)
    eps = ((1 - abar).sqrt() * x_t.double() + abar.sqrt() * v_by_hand.double()).float()
    torch.testing.assert_close(eps, noise, atol=1e-5, rtol=0)


@pytest.mark.parametrize('objective', ['v'])
def test_oracle_recovery_v(objective):
    d = GaussianDiffusion(objective=objective)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 4, 4, generator=g) * 2 - 1
    oracle_v = lambda x_t, t: d.target(x0, t, d.predict_noise_from_start(x_t, t, x0))
    for sampler, steps in (('ddim', 10), ('dpm++', 10), ('ddpm', 0)):
        x = d.sample(oracle_v, x0.shape, sampler, steps, generator=g)
        assert (x - x0).abs().max() < 1e-3, sampler


def test_min_snr_weights_by_hand():
    abar = np.cumprod(1 - np.linspace(1e-4, 2e-2, 1000))
    t = torch.tensor([0, 20, 100, 400, 999])
    snr = abar[t.numpy()] / (1 - abar[t.numpy()])  # 1e4 ... 4e-5: both sides of gamma = 5
    assert snr[0] > 5 > snr[-1]
    want = {'eps': np.minimum(snr, 5) / snr, 'x0': np.minimum(snr, 5),
            'v': np.minimum(snr, 5) / (snr + 1)}
    for objective, w in want.items():
        d = GaussianDiffusion(objective=objective, loss_weighting='min_snr', snr_gamma=5.0)
        np.testing.assert_allclose(d.snr_weight(t).numpy(), w, rtol=1e-5)
        plain = GaussianDiffusion(objective=objective)
        assert torch.equal(plain.snr_weight(t), torch.ones(5))


def test_min_snr_loss_is_the_x0_error_weighted_by_min_snr_gamma():
    """Whatever the objective, the min-SNR loss of a wrong prediction equals the squared error of
    the x0 it implies, times min(SNR_t, gamma): the point of Hang et al.'s weighting."""
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(3, 2, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([5, 150, 900])
    wrong = torch.randn(x0.shape, generator=g)  # any network output
    losses = []
    for objective in ('eps', 'x0', 'v'):
        d = GaussianDiffusion(objective=objective, loss_weighting='min_snr', snr_gamma=5.0)
        x_t = d.q_sample(x0, t, noise)
        implied_x0 = d.predict_start(x_t, t, wrong)
        abar = d.alphas_cumprod[t].double()
        snr = (abar / (1 - abar)).clamp(max=5.0).reshape(-1, 1, 1, 1)
        want = (snr * (implied_x0.double() - x0.double()).square()).mean()
        loss = d.training_loss(lambda x, t: wrong, x0, t, noise)
        torch.testing.assert_close(loss.double(), want, rtol=2e-3, atol=0)
        losses.append(loss)
    # with a mask weight the normaliser is the mask's sum, the time weight a factor
    d = GaussianDiffusion(objective='eps', loss_weighting='min_snr')
    mask = torch.ones(3, 2, 4, 4)
    mask[:, 1, :2] = 0
    x_t = d.q_sample(x0, t, noise)
    se = d.snr_weight(t).reshape(-1, 1, 1, 1) * mask * (wrong - noise).square()
    torch.testing.assert_close(d.training_loss(lambda x, t: wrong, x0, t, noise, mask),
                               se.sum() / mask.sum())


def test_self_conditioning_two_passes_in_training():
    """Rate 1: the network runs twice, first without an estimate, then with the clipped x0 of its
    first output, which carries no gradient; rate 0: once, without. The coin is torch's RNG."""
    d = GaussianDiffusion(objective='eps', self_condition=True)
    x0 = torch.rand(2, 3, 4, 4) * 2 - 1
    t = torch.tensor([3, 700])
    calls = []
    weight = torch.zeros((), requires_grad=True)

    def model_fn(x_t, t, x_self=None):
        calls.append(x_self)
        return x_t * 0.5 + weight  # a differentiable stand-in for the UNet
    loss = d.training_loss(model_fn, x0, t, self_condition_rate=1.0)
    assert len(calls) == 2 and calls[0] is None
    x_t = d.q_sample(x0, t, torch.zeros_like(x0))  # (the estimate is a function of x_t only)
    assert calls[1].requires_grad is False and calls[1].abs().max() <= 1
    loss.backward()
    assert weight.grad is not None  # the second pass is trained
    calls.clear()
    d.training_loss(model_fn, x0, t, self_condition_rate=0.0)
    assert calls == [None]
    counts = []
    for seed in range(40):  # the default rate: about half the batches use the estimate
        torch.manual_seed(seed)
        calls.clear()
        d.training_loss(model_fn, x0, t)
        counts.append(len(calls))
    assert set(counts) == {1, 2} and 10 < counts.count(2) < 30
    assert GaussianDiffusion(objective='eps').self_conditioned(model_fn) is model_fn


def test_self_conditioning_in_the_samplers():
    """Each sampler call after the first gets the previous call's clipped x0 estimate."""
    for sampler in ('ddim', 'dpm++', 'ddpm'):
        d = GaussianDiffusion(timesteps=20, objective='x0', self_condition=True)
        seen, outputs = [], []

        def model_fn(x_t, t, x_self=None):
            seen.append(x_self)
            out = torch.full_like(x_t, 0.3 * len(seen))  # x0 objective: the output is the x0
            outputs.append(out)
            return out
        d.sample(model_fn, (1, 2, 4, 4), sampler, 5, generator=torch.Generator().manual_seed(0))
        assert seen[0] is None and len(seen) == (20 if sampler == 'ddpm' else 5)
        for previous, given in zip(outputs, seen[1:]):
            assert torch.equal(given, previous.clamp(-1, 1)), sampler


def test_unet_self_condition_input():
    cfg = dict(image_size=8, in_channels=5, out_channels=5, n_ch=16, ch_mult=(1, 2),
               n_res_blocks=1, attn_res=(), dropout=0.0)
    torch.manual_seed(0)
    net = UNet(UNetConfig(**cfg, self_condition=True))
    assert net.conv_in.in_channels == 10
    for p in net.out.parameters():  # (zero-initialised: make the output depend on the input)
        torch.nn.init.normal_(p)
    x, t = torch.randn(2, 5, 8, 8), torch.tensor([1, 2])
    torch.testing.assert_close(net(x, t), net(x, t, x_self=torch.zeros(2, 5, 8, 8)))
    assert not torch.allclose(net(x, t), net(x, t, x_self=torch.ones(2, 5, 8, 8)))
    with pytest.raises(ValueError, match='x_self must be'):
        net(x, t, x_self=torch.zeros(2, 4, 8, 8))
    with pytest.raises(ValueError, match='self_condition is False'):
        UNet(UNetConfig(**cfg))(x, t, x_self=torch.zeros(2, 5, 8, 8))
