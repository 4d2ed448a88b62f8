"""Chapter 06's checks: the references and other valid coding styles pass; each classic LEO mistake
(and mutated inputs, wrong return types, partial answers, ignored arguments, device-less tensors) is
named; stubs are 'not attempted'."""
import pytest
import torch
import torch.nn.functional as F

from course_utils import checks, leo
from course_utils.chapter_checks import ch06
from conftest import message, status, stub  # shared check-test helpers


def wrong(check, fn, number, phrase):
    assert check(fn) is not fn
    assert status(number) == "wrong", message(number)
    assert phrase in message(number), message(number)


# --- 6.1 the latent inner step ------------------------------------------------------------------

def step_good(z, support_loss, alpha, create_graph=True):
    g, = torch.autograd.grad(support_loss(z), z, create_graph=create_graph)
    return z - alpha * g


def step_sub(z, support_loss, alpha, create_graph=True):
    loss = support_loss(z)
    grads = torch.autograd.grad([loss], [z], create_graph=create_graph, retain_graph=create_graph)
    return torch.sub(z, torch.mul(alpha, grads[0]))


def step_func(z, support_loss, alpha, create_graph=True):
    g = torch.func.grad(support_loss)(z)          # torch.func: differentiable in the outer graph
    if not create_graph:
        g = g.detach()
    return z - alpha * g


def step_ascent(z, support_loss, alpha, create_graph=True):
    g, = torch.autograd.grad(support_loss(z), z, create_graph=create_graph)
    return z + alpha * g


def step_no_alpha(z, support_loss, alpha, create_graph=True):
    g, = torch.autograd.grad(support_loss(z), z, create_graph=create_graph)
    return z - g


def step_alpha_mean(z, support_loss, alpha, create_graph=True):
    g, = torch.autograd.grad(support_loss(z), z, create_graph=create_graph)
    return z - torch.as_tensor(alpha).mean() * g


def step_alpha_first(z, support_loss, alpha, create_graph=True):
    g, = torch.autograd.grad(support_loss(z), z, create_graph=create_graph)
    return z - alpha[0] * g


def step_detached(z, support_loss, alpha, create_graph=True):
    g, = torch.autograd.grad(support_loss(z), z)
    return (z - alpha * g).detach()


def step_no_create_graph(z, support_loss, alpha, create_graph=True):
    g, = torch.autograd.grad(support_loss(z), z)
    return z - alpha * g


def step_always_create_graph(z, support_loss, alpha, create_graph=True):
    g, = torch.autograd.grad(support_loss(z), z, create_graph=True)
    return z - alpha * g


def step_detach_when_first_order(z, support_loss, alpha, create_graph=True):
    g, = torch.autograd.grad(support_loss(z), z, create_graph=create_graph)
    out = z - alpha * g
    return out if create_graph else out.detach()


def step_detached_z(z, support_loss, alpha, create_graph=True):
    g, = torch.autograd.grad(support_loss(z), z, create_graph=create_graph)
    return z.detach() - alpha * g


def step_no_grad(z, support_loss, alpha, create_graph=True):
    g, = torch.autograd.grad(support_loss(z), z)
    with torch.no_grad():
        return z - alpha * g


def step_no_grad_then_leaf(z, support_loss, alpha, create_graph=True):
    g, = torch.autograd.grad(support_loss(z), z, create_graph=create_graph)
    with torch.no_grad():
        z_new = z - alpha * g
    return z_new.requires_grad_()         # "fixes" requires_grad, but z' is a new leaf, cut from the encoder


def step_retain_grad_backward(z, support_loss, alpha, create_graph=True):
    loss = support_loss(z)
    z.retain_grad()
    loss.backward(create_graph=create_graph)
    return z - alpha * z.grad


def step_backward(z, support_loss, alpha, create_graph=True):
    support_loss(z).backward()
    return z - alpha * z.grad              # z is not a leaf: z.grad is None


def step_reads_grad(z, support_loss, alpha, create_graph=True):
    support_loss(z)
    return z - alpha * z.grad              # never filled: None


def step_grad_twice(z, support_loss, alpha, create_graph=True):
    loss = support_loss(z)
    torch.autograd.grad(loss, z)           # frees the graph of loss
    g, = torch.autograd.grad(loss, z, create_graph=create_graph)
    return z - alpha * g


def step_backward_inputs(z, support_loss, alpha, create_graph=True):
    # a valid, if unusual, style: backward restricted to z (no parameter gets a .grad)
    loss = support_loss(z)
    loss.backward(inputs=[z], create_graph=create_graph)
    return z - alpha * z.grad


def step_mean_grad(z, support_loss, alpha, create_graph=True):
    g, = torch.autograd.grad(support_loss(z), z, create_graph=create_graph)
    return z - alpha * g.mean(0)


def step_in_place(z, support_loss, alpha, create_graph=True):
    g, = torch.autograd.grad(support_loss(z), z, create_graph=create_graph)
    z.data -= (alpha * g).data
    return z


def step_tuple(z, support_loss, alpha, create_graph=True):
    loss = support_loss(z)
    g, = torch.autograd.grad(loss, z, create_graph=create_graph)
    return z - alpha * g, loss


def step_partial(z, support_loss, alpha, create_graph=True):
    if not create_graph:
        raise NotImplementedError("first-order case still to do")
    g, = torch.autograd.grad(support_loss(z), z, create_graph=True)
    return z - alpha * g


def step_ignores_loss(z, support_loss, alpha, create_graph=True):
    # "knows" the chapter's loss shape: differentiates a fixed function instead of the one given
    return z - alpha * 0.1 * z


def step_cpu_vector(z, support_loss, alpha, create_graph=True):
    g, = torch.autograd.grad(support_loss(z), z, create_graph=create_graph)
    a = alpha * torch.ones(z.shape[1], dtype=z.dtype)      # made on the CPU, whatever z's device
    return z - a * g


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_latent_step_reference_and_valid_styles_pass():
    assert ch06.latent_step(ch06.reference_latent_step) is ch06.reference_latent_step
    assert status("6.1") == "right"
    for fn in (step_good, step_sub, step_func, step_backward_inputs):
        assert ch06.latent_step(fn) is fn, message("6.1")


@pytest.mark.parametrize("fn, phrase", [
    (step_ascent, "up the gradient"),
    (step_no_alpha, "alpha is missing"),
    (step_alpha_mean, "alpha is used as one number"),
    (step_alpha_first, "only one entry of alpha"),
    (step_detached, "detached"),
    (step_no_grad, "detached"),
    (step_no_create_graph, "create_graph"),
    (step_always_create_graph, "create_graph is ignored"),
    (step_detach_when_first_order, "with create_graph=False, z' carries no gradient"),
    (step_detached_z, "encoder"),
    (step_no_grad_then_leaf, "or is computed under torch.no_grad()"),
    (step_retain_grad_backward, "your function calls .backward()"),
    (step_retain_grad_backward, "torch.autograd.grad(loss, z, create_graph=create_graph), not .backward()"),
    (step_backward, "z is not a leaf"),
    (step_backward, "writes .grad into the model's parameters"),
    (step_reads_grad, "That None is most likely z.grad"),
    (step_grad_twice, "the graph behind z was freed"),
    (step_mean_grad, "averaged over the classes"),
    (step_in_place, "changed its input `z` in place"),
    (step_tuple, "should be a Tensor, but it is a tuple"),
    (step_partial, "not the exercise's stub"),
    (step_ignores_loss, "z'"),
    (step_cpu_vector, "makes a tensor on the CPU"),
])
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_latent_step_mistakes(fn, phrase):
    wrong(ch06.latent_step, fn, "6.1", phrase)


def test_latent_step_with_alpha_as_a_number_is_probed():
    def only_tensors(z, support_loss, alpha, create_graph=True):
        g, = torch.autograd.grad(support_loss(z), z, create_graph=create_graph)
        return z - alpha.view(1, -1) * g
    wrong(ch06.latent_step, only_tensors, "6.1", "alpha a plain number")


def test_latent_step_quadratic_catches_a_mean_over_classes_of_alpha_scaled_step():
    # right on the softmax problem (mean of per-class gradients is 0 there, so z' = z is caught),
    # and a mean over classes on the quadratic problem is named too
    def mean_on_quadratic(z, support_loss, alpha, create_graph=True):
        g, = torch.autograd.grad(support_loss(z), z, create_graph=create_graph)
        return z - alpha * (g.mean(0) if z.shape[0] == 2 else g)
    wrong(ch06.latent_step, mean_on_quadratic, "6.1", "averaged over the classes")


# --- 6.2 sampling -------------------------------------------------------------------------------

def kl(mu, log_var):
    return 0.5 * (log_var.exp() + mu ** 2 - 1 - log_var).sum(-1)


def sample_good(mu, log_var, eps):
    sigma = torch.exp(0.5 * log_var)
    return mu + sigma * eps, 0.5 * (sigma ** 2 + mu ** 2 - 1 - log_var).sum(-1)


def sample_sqrt_style(mu, log_var, eps):
    var = log_var.exp()
    sample = torch.addcmul(mu, var.sqrt(), eps)
    return [sample, (var + mu.pow(2) - 1 - log_var).sum(dim=1) / 2]       # a list is fine too


def sample_torch_kl(mu, log_var, eps):
    q = torch.distributions.Normal(mu, torch.exp(0.5 * log_var))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    return mu + q.stddev * eps, torch.distributions.kl_divergence(q, p).sum(-1)


def sample_no_reparam(mu, log_var, eps):
    return torch.normal(mu, torch.exp(0.5 * log_var)).detach(), kl(mu, log_var)


def sample_torch_normal(mu, log_var, eps):
    return torch.normal(mu, torch.exp(0.5 * log_var)), kl(mu, log_var)


def sample_dist(mu, log_var, eps):
    return torch.distributions.Normal(mu, torch.exp(0.5 * log_var)).sample(), kl(mu, log_var)


def sample_variance_as_std(mu, log_var, eps):
    return mu + torch.exp(log_var) * eps, kl(mu, log_var)


def sample_logvar_as_std(mu, log_var, eps):
    return mu + log_var * eps, kl(mu, log_var)


def sample_sqrt_logvar(mu, log_var, eps):
    return mu + log_var.sqrt() * eps, kl(mu, log_var)


def sample_no_eps(mu, log_var, eps):
    return mu + torch.exp(0.5 * log_var), kl(mu, log_var)


def sample_kl_sign(mu, log_var, eps):
    return mu + torch.exp(0.5 * log_var) * eps, -kl(mu, log_var)


def sample_kl_no_half(mu, log_var, eps):
    return mu + torch.exp(0.5 * log_var) * eps, 2 * kl(mu, log_var)


def sample_kl_mean(mu, log_var, eps):
    return mu + torch.exp(0.5 * log_var) * eps, kl(mu, log_var) / mu.shape[-1]


def sample_kl_mean_call(mu, log_var, eps):
    return mu + torch.exp(0.5 * log_var) * eps, 0.5 * (log_var.exp() + mu ** 2 - 1 - log_var).mean(-1)


def sample_kl_wrong_axis(mu, log_var, eps):
    return mu + torch.exp(0.5 * log_var) * eps, 0.5 * (log_var.exp() + mu ** 2 - 1 - log_var).sum(0)


def sample_kl_scalar(mu, log_var, eps):
    return mu + torch.exp(0.5 * log_var) * eps, kl(mu, log_var).sum()


def sample_kl_not_reduced(mu, log_var, eps):
    return mu + torch.exp(0.5 * log_var) * eps, 0.5 * (log_var.exp() + mu ** 2 - 1 - log_var)


def sample_kl_log_of_logvar(mu, log_var, eps):
    # log_var read as the variance: log(log_var) is NaN where log_var < 0
    return mu + torch.exp(0.5 * log_var) * eps, 0.5 * (log_var + mu ** 2 - 1 - torch.log(log_var)).sum(-1)


def sample_kl_logvar_as_log_sigma(mu, log_var, eps):
    return mu + torch.exp(0.5 * log_var) * eps, 0.5 * (torch.exp(2 * log_var) + mu ** 2 - 1 - 2 * log_var).sum(-1)


def sample_kl_sigma(mu, log_var, eps):
    sigma = torch.exp(0.5 * log_var)
    return mu + sigma * eps, 0.5 * (sigma + mu ** 2 - 1 - log_var).sum(-1)


def sample_kl_of_sample(mu, log_var, eps):
    s = mu + torch.exp(0.5 * log_var) * eps
    return s, 0.5 * (log_var.exp() + s ** 2 - 1 - log_var).sum(-1)


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


def sample_swapped(mu, log_var, eps):
    return kl(mu, log_var), mu + torch.exp(0.5 * log_var) * eps


def sample_only_sample(mu, log_var, eps):
    return mu + torch.exp(0.5 * log_var) * eps


def sample_in_place(mu, log_var, eps):
    eps.mul_(torch.exp(0.5 * log_var.detach()))
    return mu + eps, kl(mu, log_var)


def sample_partial(mu, log_var, eps):
    s = mu + torch.exp(0.5 * log_var) * eps
    raise NotImplementedError("KL: todo")


def sample_cpu_constant(mu, log_var, eps):
    one = torch.ones(mu.shape[-1], dtype=mu.dtype)           # on the CPU, whatever mu's device
    return mu + torch.exp(0.5 * log_var) * eps, 0.5 * (log_var.exp() + mu ** 2 - one - log_var).sum(-1)


def sample_hard_coded_rows(mu, log_var, eps):
    return mu + torch.exp(0.5 * log_var) * eps, kl(mu, log_var)[:3] if mu.shape[0] >= 3 else kl(mu, log_var)


def test_sample_reference_and_valid_styles_pass():
    assert ch06.sample_gaussian(ch06.reference_sample_gaussian) is ch06.reference_sample_gaussian
    assert status("6.2") == "right"
    for fn in (sample_good, sample_sqrt_style, sample_torch_kl):
        assert ch06.sample_gaussian(fn) is fn, message("6.2")


@pytest.mark.parametrize("fn, phrase", [
    (sample_no_reparam, "reparameterisation"),
    (sample_torch_normal, "reparameterisation"),
    (sample_dist, "reparameterisation"),
    (sample_own_noise, "eps you are given"),
    (sample_variance_as_std, "variance as the standard deviation"),
    (sample_logvar_as_std, "log-variance itself as the standard deviation"),
    (sample_sqrt_logvar, "as if it were a variance"),
    (sample_no_eps, "the noise eps is missing"),
    (sample_kl_sign, "wrong sign"),
    (sample_kl_sign, "never negative"),
    (sample_kl_vae_sign, "never negative"),
    (sample_kl_logvar_sign, "never negative"),
    (sample_kl_no_half, "1/2"),
    (sample_kl_mean, "averaged over the latent dimensions"),
    (sample_kl_mean_call, "averaged over the latent dimensions"),
    (sample_kl_wrong_axis, "reduced over the rows (dim 0)"),
    (sample_kl_scalar, "one number for the whole batch"),
    (sample_kl_not_reduced, "not summed over the latent dimensions"),
    (sample_kl_log_of_logvar, "as if log_var were the variance"),
    (sample_kl_logvar_as_log_sigma, "reads log_var as log sigma"),
    (sample_kl_sigma, "sigma instead of sigma^2"),
    (sample_kl_of_sample, "for the sample, not the distribution"),
    (sample_detached_mu, "not differentiable"),
    (sample_kl_detached, "does not carry gradients"),
    (sample_swapped, "wrong order"),
    (sample_only_sample, "should return a pair (sample, kl)"),
    (sample_in_place, "changed its input `eps` in place"),
    (sample_partial, "not the exercise's stub"),
    (sample_cpu_constant, "makes a tensor on the CPU"),
])
def test_sample_mistakes(fn, phrase):
    wrong(ch06.sample_gaussian, fn, "6.2", phrase)


def test_sample_in_float32_gets_the_dtype_message_only():
    def in_float32(mu, log_var, eps):
        return mu.float() + torch.exp(0.5 * log_var.float()) * eps.float(), kl(mu, log_var)
    wrong(ch06.sample_gaussian, in_float32, "6.2", "compute in float64")
    assert "torch.float32" in message("6.2") and "no torch.randn inside" not in message("6.2"), message("6.2")
    # a sample that is wrong for another reason still gets the hint about the noise
    wrong(ch06.sample_gaussian, lambda mu, log_var, eps: (mu + 0.9 * torch.exp(0.5 * log_var) * eps, kl(mu, log_var)),
          "6.2", "no torch.randn inside")


def test_sample_second_shape_is_probed():
    def fixed_rows(mu, log_var, eps):
        s = mu + torch.exp(0.5 * log_var) * eps
        return s, kl(mu, log_var)[torch.tensor([0, 1, 2]) % mu.shape[0]]   # right for 3 rows only
    wrong(ch06.sample_gaussian, fixed_rows, "6.2", "shape (5, 2)")


# --- 6.3 the objective --------------------------------------------------------------------------

def ortho(W):
    n = W.norm(dim=1, keepdim=True)
    C = W @ W.T / (n @ n.T)
    return ((C - torch.eye(W.shape[0], dtype=W.dtype, device=W.device)) ** 2).mean()


def decay(weights):
    return sum(w.pow(2).sum() for w in weights)


def objective(query_loss=None, kl_term=None, encoder=None, decay_term=None, orth=None):
    """Build an objective from its five terms; each keyword replaces one term by a wrong version."""
    def fn(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, weights, beta, gamma, lambda_1, lambda_2):
        lq = query_loss(query_logits, query_y) if query_loss else F.cross_entropy(query_logits, query_y)
        k = kl_term(kl, z_init) if kl_term else kl.mean()
        e = encoder(z_init, z_adapted) if encoder else ((z_adapted.detach() - z_init) ** 2).mean()
        d = decay_term(weights, decoder_weight) if decay_term else decay(weights)
        o = orth(decoder_weight, weights) if orth else ortho(decoder_weight)
        return lq + beta * k + gamma * e + lambda_1 * d + lambda_2 * o
    return fn


def objective_good(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, weights, beta, gamma,
                   lambda_1, lambda_2):
    return (F.cross_entropy(query_logits, query_y) + beta * kl.mean()
            + gamma * ((z_adapted.detach() - z_init) ** 2).mean() + lambda_1 * decay(weights)
            + lambda_2 * ortho(decoder_weight))


def objective_other_style(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, weights, beta, gamma,
                          lambda_1, lambda_2):
    Wn = F.normalize(decoder_weight, dim=1)
    C = Wn @ Wn.T
    n = C.shape[0]
    orth = ((C ** 2).sum() - 2 * C.diagonal().sum() + n) / n ** 2        # = mean((C - I)^2), no eye at all
    wd = torch.cat([w.flatten() for w in weights]).pow(2).sum()
    enc = F.mse_loss(z_init, z_adapted.detach())
    nll = -F.log_softmax(query_logits, dim=1).gather(1, query_y[:, None]).mean()
    return nll + beta * kl.sum() / kl.numel() + gamma * enc + lambda_1 * wd + lambda_2 * orth


def objective_loop_style(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, weights, beta, gamma,
                         lambda_1, lambda_2):
    total = F.cross_entropy(query_logits, query_y) + beta * torch.mean(kl)
    target = z_adapted.detach()
    total = total + gamma * torch.mean((target - z_init) ** 2)
    for w in weights:
        total = total + lambda_1 * torch.sum(w * w)
    eye = torch.eye(decoder_weight.shape[0]).to(decoder_weight)
    rows = decoder_weight / decoder_weight.norm(dim=1, keepdim=True)
    return total + lambda_2 * torch.mean((rows @ rows.T - eye) ** 2)


def cpu_eye(W, weights):
    n = W.norm(dim=1, keepdim=True)
    C = W @ W.T / (n @ n.T)
    return ((C - torch.eye(W.shape[0], dtype=W.dtype)) ** 2).mean()


def frobenius(W, weights=None):
    n = W.norm(dim=1, keepdim=True)
    return torch.linalg.norm(W @ W.T / (n @ n.T) - torch.eye(W.shape[0], dtype=W.dtype, device=W.device))


def gram(W, weights):
    return ((W @ W.T - torch.eye(W.shape[0], dtype=W.dtype, device=W.device)) ** 2).mean()


def gram_columns(W, weights):
    return ((W.T @ W - torch.eye(W.shape[1], dtype=W.dtype, device=W.device)) ** 2).mean()


def objective_kl_sign(*a):
    return objective(kl_term=lambda kl, z: -kl.mean())(*a)


def objective_beta_ignored(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, weights, beta, gamma,
                           lambda_1, lambda_2):
    return (F.cross_entropy(query_logits, query_y) + 1e-3 * kl.mean()
            + gamma * ((z_adapted.detach() - z_init) ** 2).mean() + lambda_1 * decay(weights)
            + lambda_2 * ortho(decoder_weight))


def objective_swapped(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, weights, beta, gamma,
                      lambda_1, lambda_2):
    # lambda_1 and lambda_2 read the other way round (lambda for orthogonality, lambda_2 for decay)
    return (F.cross_entropy(query_logits, query_y) + beta * kl.mean()
            + gamma * ((z_adapted.detach() - z_init) ** 2).mean() + lambda_2 * decay(weights)
            + lambda_1 * ortho(decoder_weight))


def objective_multiplied(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, weights, beta, gamma,
                         lambda_1, lambda_2):
    lq = F.cross_entropy(query_logits, query_y)
    return lq * (1 + beta * kl.mean()) + gamma * ((z_adapted.detach() - z_init) ** 2).mean() + \
        lambda_1 * decay(weights) + lambda_2 * ortho(decoder_weight)


def objective_in_place(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, weights, beta, gamma,
                       lambda_1, lambda_2):
    z_adapted.data.sub_(z_init.data)            # "reuses" the buffer for the difference
    return (F.cross_entropy(query_logits, query_y) + beta * kl.mean() + gamma * (z_adapted.detach() ** 2).mean()
            + lambda_1 * decay(weights) + lambda_2 * ortho(decoder_weight))


def objective_mutates_weights(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, weights, beta, gamma,
                              lambda_1, lambda_2):
    weights.append(decoder_weight)
    return objective_good(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, weights[:-1], beta,
                          gamma, lambda_1, lambda_2)


def objective_returns_parts(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, weights, beta, gamma,
                            lambda_1, lambda_2):
    lq = F.cross_entropy(query_logits, query_y)
    return lq, objective_good(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, weights, beta,
                              gamma, lambda_1, lambda_2)


def objective_returns_float(*a):
    return objective_good(*a).item()


def objective_partial(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, weights, beta, gamma,
                      lambda_1, lambda_2):
    lq = F.cross_entropy(query_logits, query_y)
    raise NotImplementedError("orthogonality: todo")


def objective_global_relation(query_logits, query_y, kl, z_init, z_adapted, decoder_weight, weights, beta, gamma,
                              lambda_1, lambda_2):
    torch.manual_seed(0)
    relation = torch.nn.Linear(8, 8, bias=False).double()   # some other matrix than the argument
    return objective(orth=lambda W, ws: ortho(relation.weight.detach()))(
        query_logits, query_y, kl, z_init, z_adapted, decoder_weight, weights, beta, gamma, lambda_1, lambda_2)


def test_objective_reference_and_valid_styles_pass():
    assert ch06.leo_objective(ch06.reference_leo_objective) is ch06.reference_leo_objective
    assert status("6.3") == "right"
    for fn in (objective_good, objective_other_style, objective_loop_style, objective()):
        assert ch06.leo_objective(fn) is fn, message("6.3")


OBJECTIVE_MISTAKES = [
    # the query loss
    (objective(query_loss=lambda lg, y: F.cross_entropy(lg, y, reduction="sum")), "query loss is summed"),
    (objective(query_loss=lambda lg, y: F.cross_entropy(lg.softmax(-1), y)), "of probabilities"),
    (objective(query_loss=lambda lg, y: F.nll_loss(lg, y)), "nll_loss"),
    (objective(query_loss=lambda lg, y: F.cross_entropy(lg, torch.arange(lg.shape[1]).repeat_interleave(
        lg.shape[0] // lg.shape[1]))), "ignores query_y"),
    # the KL term
    (objective_kl_sign, "KL term is subtracted"),
    (objective(kl_term=lambda kl, z: kl.sum()), "KL is summed over the classes"),
    (objective(kl_term=lambda kl, z: kl.mean() / z.shape[1]), "divided by n_z"),
    (objective(kl_term=lambda kl, z: 0 * kl.mean()), "KL term is missing"),
    (objective_beta_ignored, "the KL term is not multiplied by beta"),
    # the encoder penalty
    (objective(encoder=lambda z0, z1: ((z1 - z0) ** 2).mean()), "stop-gradient is missing"),
    (objective(encoder=lambda z0, z1: ((z1 - z0.detach()) ** 2).mean()), "wrong side"),
    (objective(encoder=lambda z0, z1: ((z1 - z0).detach() ** 2).mean()), "does not reach z_init"),
    (objective(encoder=lambda z0, z1: ((z1.detach() - z0) ** 2).sum()), "squared norm ||z' - z||^2"),
    (objective(encoder=lambda z0, z1: (z1.detach() - z0).norm()), "the norm ||z' - z||"),
    (objective(encoder=lambda z0, z1: ((z1.detach() - z0) ** 2).sum(1).mean()), "averages over the classes"),
    (objective(encoder=lambda z0, z1: (z1.detach() - z0).abs().mean()), "mean absolute difference"),
    # weight decay
    (objective(decay_term=lambda ws, W: 0.5 * decay(ws)), "halved"),
    (objective(decay_term=lambda ws, W: sum(w.pow(2).mean() for w in ws)), "averages the squares within each"),
    (objective(decay_term=lambda ws, W: sum(w.norm() for w in ws)), "sums the norms"),
    (objective(decay_term=lambda ws, W: ws[0].pow(2).sum()), "only the first tensor"),
    (objective(decay_term=lambda ws, W: decay(ws[:-1])), "leaves out the last tensor"),
    (objective(decay_term=lambda ws, W: decay([w.detach() for w in ws])), "does not reach some of the weights"),
    (objective(decay_term=lambda ws, W: 0 * decay(ws)), "weight decay is missing"),
    (objective(decay_term=lambda ws, W: decay(ws).detach() + 0 * ws[0].sum()), "does not reach some of the weights"),
    # the orthogonality penalty
    (objective(orth=lambda W, ws: ortho(W.T)), "on the columns (W^T W)"),
    (objective(orth=gram), "without dividing by the row norms"),
    (objective(orth=gram_columns), "the columns and unnormalised"),
    (objective(orth=lambda W, ws: frobenius(W) ** 2), "squared Frobenius norm"),
    (objective(orth=lambda W, ws: frobenius(W)), "Frobenius norm ||C - I|| (torch.linalg.norm"),
    (objective(orth=lambda W, ws: (F.normalize(W, dim=1) @ F.normalize(W, dim=1).T).pow(2).mean()),
     "identity is not subtracted"),
    (objective(orth=lambda W, ws: ortho(ws[1])), "weights[1] (a relation net layer's) weight"),
    (objective(orth=lambda W, ws: ortho(ws[0])), "not on decoder_weight"),
    (objective_global_relation, "does not depend on decoder_weight"),
    (objective(orth=lambda W, ws: ortho(W).detach()), "orthogonality penalty"),
    (objective(orth=cpu_eye), "makes a tensor on the CPU"),
    # the weights, the sum, the protocol
    (objective_swapped, "the weights are mixed up"),
    (objective_multiplied, "the KL term (the objective with only beta"),
    (objective_in_place, "changed its input `z_adapted` in place"),
    (objective_mutates_weights, "changed its input `weights` in place"),
    (objective_returns_parts, "returned a tuple of 2"),
    (objective_returns_float, "returned a Python float"),
    (objective_partial, "not the exercise's stub"),
]


@pytest.mark.parametrize("fn, phrase", OBJECTIVE_MISTAKES)
def test_objective_mistakes(fn, phrase):
    wrong(ch06.leo_objective, fn, "6.3", phrase)


def test_objective_messages_locate_the_term():
    """Each term's mistake names that term, never another one."""
    cases = {"KL term": objective(kl_term=lambda kl, z: kl.sum() * 2),
             "encoder penalty": objective(encoder=lambda z0, z1: 3 * ((z1.detach() - z0) ** 2).mean()),
             "weight decay": objective(decay_term=lambda ws, W: 3 * decay(ws)),
             "orthogonality penalty": objective(orth=lambda W, ws: 3 * ortho(W))}
    for term, fn in cases.items():
        ch06.leo_objective(fn)
        assert status("6.3") == "wrong"
        assert message("6.3").startswith(f"the {term}"), message("6.3")


def test_orthogonality_in_float32_gets_the_float32_hint():
    """A float64 objective whose orthogonality term was computed in float32 agrees to ~7 digits only."""
    wrong(ch06.leo_objective, objective(orth=lambda W, ws: ortho(W.float())), "6.3", "7 significant digits")
    assert message("6.3").startswith("the orthogonality penalty"), message("6.3")


def test_device_less_eye_is_caught_on_a_cpu():
    """The classic torch.eye(n) without device= is caught through the meta device, on any machine."""
    wrong(ch06.leo_objective, objective(orth=cpu_eye), "6.3", "device=x.device")
    assert "torch.eye" in message("6.3")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_less_eye_really_crashes_on_cuda():
    """What the meta-device check stands for: on a GPU the bare torch.eye(n) fails."""
    W = torch.randn(4, 10, device="cuda")
    with pytest.raises(RuntimeError, match="device"):
        cpu_eye(W, [])
    assert torch.isfinite(ortho(W))


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
