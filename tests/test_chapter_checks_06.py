"""Chapter 06's checks: the references pass; each classic LEO mistake is named; stubs are 'not attempted'."""
import pytest
import torch
import torch.nn.functional as F

from course_utils import checks, leo
from course_utils.chapter_checks import ch06
from conftest import message, status, stub  # shared check-test helpers




# --- 6.1 the latent inner step ------------------------------------------------------------------

def step_good(z, support_loss, alpha):
    g, = torch.autograd.grad(support_loss(z), z, create_graph=True)
    return z - alpha * g


def step_ascent(z, support_loss, alpha):
    g, = torch.autograd.grad(support_loss(z), z, create_graph=True)
    return z + alpha * g


def step_no_alpha(z, support_loss, alpha):
    g, = torch.autograd.grad(support_loss(z), z, create_graph=True)
    return z - g


def step_detached(z, support_loss, alpha):
    g, = torch.autograd.grad(support_loss(z), z)
    return (z - alpha * g).detach()


def step_no_create_graph(z, support_loss, alpha):
    g, = torch.autograd.grad(support_loss(z), z)
    return z - alpha * g


def step_detached_z(z, support_loss, alpha):
    g, = torch.autograd.grad(support_loss(z), z, create_graph=True)
    return z.detach() - alpha * g


def step_no_grad(z, support_loss, alpha):
    g, = torch.autograd.grad(support_loss(z), z)
    with torch.no_grad():
        return z - alpha * g


def step_mean_grad(z, support_loss, alpha):
    g, = torch.autograd.grad(support_loss(z), z, create_graph=True)
    return z - alpha * g.mean(0)


def test_latent_step_reference_and_a_good_answer_pass():
    assert ch06.latent_step(ch06.reference_latent_step) is ch06.reference_latent_step
    assert status("6.1") == "right"
    assert ch06.latent_step(step_good) is step_good


@pytest.mark.parametrize("fn, phrase", [
    (step_ascent, "up the gradient"),
    (step_no_alpha, "alpha is missing"),
    (step_detached, "detached"),
    (step_no_grad, "detached"),
    (step_no_create_graph, "create_graph"),
    (step_detached_z, "encoder"),
    (step_mean_grad, "averaged over the classes"),
])
def test_latent_step_mistakes(fn, phrase):
    assert ch06.latent_step(fn) is ch06.reference_latent_step
    assert status("6.1") == "wrong"
    assert phrase in message("6.1"), message("6.1")


# --- 6.2 sampling -------------------------------------------------------------------------------

def sample_good(mu, log_var, eps):
    sigma = torch.exp(0.5 * log_var)
    return mu + sigma * eps, 0.5 * (sigma ** 2 + mu ** 2 - 1 - log_var).sum(-1)


def kl(mu, log_var):
    return 0.5 * (log_var.exp() + mu ** 2 - 1 - log_var).sum(-1)


def sample_no_reparam(mu, log_var, eps):
    return torch.normal(mu, torch.exp(0.5 * log_var)).detach(), kl(mu, log_var)


def sample_dist(mu, log_var, eps):
    return torch.distributions.Normal(mu, torch.exp(0.5 * log_var)).sample(), kl(mu, log_var)


def sample_variance_as_std(mu, log_var, eps):
    return mu + torch.exp(log_var) * eps, kl(mu, log_var)


def sample_kl_sign(mu, log_var, eps):
    return mu + torch.exp(0.5 * log_var) * eps, -kl(mu, log_var)


def sample_kl_no_half(mu, log_var, eps):
    return mu + torch.exp(0.5 * log_var) * eps, 2 * kl(mu, log_var)


def sample_kl_mean(mu, log_var, eps):
    return mu + torch.exp(0.5 * log_var) * eps, kl(mu, log_var) / mu.shape[-1]


def sample_detached_mu(mu, log_var, eps):
    return mu.detach() + torch.exp(0.5 * log_var) * eps, kl(mu, log_var)


def sample_kl_detached(mu, log_var, eps):
    return mu + torch.exp(0.5 * log_var) * eps, kl(mu, log_var).detach()


def sample_own_noise(mu, log_var, eps):
    return mu + torch.exp(0.5 * log_var) * torch.randn_like(mu), kl(mu, log_var)


def sample_kl_logvar_sign(mu, log_var, eps):
    return mu + torch.exp(0.5 * log_var) * eps, 0.5 * (log_var.exp() + mu ** 2 - 1 + log_var).sum(-1)


def sample_kl_vae_sign(mu, log_var, eps):
    # the VAE paper's -KL term, 1/2 sum (1 + log sigma^2 - mu^2 - sigma^2), used as the KL
    return mu + torch.exp(0.5 * log_var) * eps, 0.5 * (1 + log_var - mu ** 2 - log_var.exp()).sum(-1)


def test_sample_reference_and_a_good_answer_pass():
    assert ch06.sample_gaussian(ch06.reference_sample_gaussian) is ch06.reference_sample_gaussian
    assert status("6.2") == "right"
    assert ch06.sample_gaussian(sample_good) is sample_good


@pytest.mark.parametrize("fn, phrase", [
    (sample_no_reparam, "reparameterisation"),
    (sample_dist, "reparameterisation"),
    (sample_variance_as_std, "variance as the standard deviation"),
    (sample_kl_sign, "wrong sign"),
    (sample_kl_sign, "never negative"),
    (sample_kl_vae_sign, "never negative"),
    (sample_kl_logvar_sign, "never negative"),
    (sample_kl_no_half, "1/2"),
    (sample_kl_mean, "averaged over the dimensions"),
    (sample_detached_mu, "not differentiable"),
    (sample_kl_detached, "does not carry gradients"),
    (sample_own_noise, "eps you are given"),
])
def test_sample_mistakes(fn, phrase):
    assert ch06.sample_gaussian(fn) is ch06.reference_sample_gaussian
    assert status("6.2") == "wrong"
    assert phrase in message("6.2"), message("6.2")


# --- 6.3 the objective --------------------------------------------------------------------------

def ortho(W):
    n = W.norm(dim=1, keepdim=True)
    C = W @ W.T / (n @ n.T)
    return ((C - torch.eye(W.shape[0], dtype=W.dtype)) ** 2).mean()


def objective_good(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, beta, gamma, lam):
    return (F.cross_entropy(query_logits, query_y) + beta * kl.mean()
            + gamma * ((z_adapted.detach() - z_init) ** 2).mean() + lam * ortho(decoder_weight))


def objective_no_stopgrad(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, beta, gamma, lam):
    return (F.cross_entropy(query_logits, query_y) + beta * kl.mean()
            + gamma * ((z_adapted - z_init) ** 2).mean() + lam * ortho(decoder_weight))


def objective_kl_sign(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, beta, gamma, lam):
    return (F.cross_entropy(query_logits, query_y) - beta * kl.mean()
            + gamma * ((z_adapted.detach() - z_init) ** 2).mean() + lam * ortho(decoder_weight))


def objective_gram(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, beta, gamma, lam):
    W = decoder_weight
    return (F.cross_entropy(query_logits, query_y) + beta * kl.mean()
            + gamma * ((z_adapted.detach() - z_init) ** 2).mean()
            + lam * ((W @ W.T - torch.eye(W.shape[0], dtype=W.dtype)) ** 2).mean())


def objective_columns(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, beta, gamma, lam):
    return (F.cross_entropy(query_logits, query_y) + beta * kl.mean()
            + gamma * ((z_adapted.detach() - z_init) ** 2).mean() + lam * ortho(decoder_weight.T))


def objective_both_detached(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, beta, gamma, lam):
    return (F.cross_entropy(query_logits, query_y) + beta * kl.mean()
            + gamma * ((z_adapted - z_init).detach() ** 2).mean() + lam * ortho(decoder_weight))


def objective_no_ortho(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, beta, gamma, lam):
    return (F.cross_entropy(query_logits, query_y) + beta * kl.mean()
            + gamma * ((z_adapted.detach() - z_init) ** 2).mean())


def objective_detach_z_init(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, beta, gamma, lam):
    return (F.cross_entropy(query_logits, query_y) + beta * kl.mean()
            + gamma * ((z_adapted - z_init.detach()) ** 2).mean() + lam * ortho(decoder_weight))


def frobenius(W):
    n = W.norm(dim=1, keepdim=True)
    C = W @ W.T / (n @ n.T)
    return torch.linalg.norm(C - torch.eye(W.shape[0], dtype=W.dtype, device=W.device))


def objective_frobenius_squared(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, beta, gamma, lam):
    return (F.cross_entropy(query_logits, query_y) + beta * kl.mean()
            + gamma * ((z_adapted.detach() - z_init) ** 2).mean() + lam * frobenius(decoder_weight) ** 2)


def objective_frobenius(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, beta, gamma, lam):
    return (F.cross_entropy(query_logits, query_y) + beta * kl.mean()
            + gamma * ((z_adapted.detach() - z_init) ** 2).mean() + lam * frobenius(decoder_weight))


def objective_norms_literal(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, beta, gamma, lam):
    return (F.cross_entropy(query_logits, query_y) + beta * kl.mean()
            + gamma * torch.linalg.norm(z_adapted.detach() - z_init) ** 2 + lam * frobenius(decoder_weight) ** 2)


def objective_eye_no_device(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, beta, gamma, lam):
    W = decoder_weight
    n = W.norm(dim=1, keepdim=True)
    C = W @ W.T / (n @ n.T)
    return (F.cross_entropy(query_logits, query_y) + beta * kl.mean()
            + gamma * ((z_adapted.detach() - z_init) ** 2).mean() + lam * ((C - torch.eye(W.shape[0])) ** 2).mean())


def test_objective_reference_and_a_good_answer_pass():
    assert ch06.leo_objective(ch06.reference_leo_objective) is ch06.reference_leo_objective
    assert status("6.3") == "right"
    assert ch06.leo_objective(objective_good) is objective_good


@pytest.mark.parametrize("fn, phrase", [
    (objective_no_stopgrad, "stop the gradient"),
    (objective_kl_sign, "KL term is subtracted"),
    (objective_gram, "correlation matrix"),
    (objective_columns, "columns"),
    (objective_both_detached, "does not reach z_init"),
    (objective_no_ortho, "orthogonality penalty is missing"),
    (objective_detach_z_init, "wrong side"),
    (objective_frobenius_squared, "you summed where the objective averages"),
    (objective_frobenius_squared, "squared Frobenius norm"),
    (objective_frobenius, "Frobenius norm ||C - I|| (torch.linalg.norm"),
    (objective_norms_literal, "both penalties are sums"),
])
def test_objective_mistakes(fn, phrase):
    assert ch06.leo_objective(fn) is ch06.reference_leo_objective
    assert status("6.3") == "wrong"
    assert phrase in message("6.3"), message("6.3")


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the device-less eye is caught (test below)")
def test_device_less_eye_cannot_be_seen_on_cpu():
    # Documented limitation: on a CPU every tensor is on the CPU, so torch.eye(n) without device= passes.
    ch06.leo_objective(objective_eye_no_device)
    assert status("6.3") == "right"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_less_eye_is_caught_on_cuda():
    ch06.leo_objective(objective_eye_no_device)
    assert status("6.3") == "wrong"
    assert "device=W.device" in message("6.3"), message("6.3")
    ch06.leo_objective(objective_good)
    assert status("6.3") == "right"


# --- protocol -----------------------------------------------------------------------------------

@pytest.mark.parametrize("check, number", [(ch06.latent_step, "6.1"), (ch06.sample_gaussian, "6.2"),
                                           (ch06.leo_objective, "6.3")])
def test_stubs_are_not_attempted(check, number):
    check(stub)
    assert status(number) == "not attempted"


@pytest.mark.parametrize("check, fn", [(ch06.latent_step, step_ascent), (ch06.sample_gaussian, stub),
                                       (ch06.leo_objective, objective_kl_sign)])
def test_strict_mode_raises(monkeypatch, check, fn):
    monkeypatch.setenv("COURSE_STRICT", "1")
    with pytest.raises(checks.ExerciseError):
        check(fn)


def test_references_are_the_modules():
    assert ch06.reference_latent_step is leo.latent_step
    assert ch06.reference_sample_gaussian is leo.sample_gaussian
    assert ch06.reference_leo_objective is leo.leo_objective
    assert ch06.EXERCISES == ["6.1", "6.2", "6.3"]
