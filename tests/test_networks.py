import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxbrc.actor import TanhGaussianActor
from purejaxbrc.bronet import BroNet, LayerNorm, matmul
from purejaxbrc.critic import CategoricalCritic
from purejaxbrc.embedding import TaskEmbedding
from purejaxbrc.orthogonal import haar_columns, orthogonal
from purejaxbrc.padding import pad_last_axis, task_action, valid_action_mask

pytestmark = pytest.mark.numerics  # numbers only: `pytest -m numerics` selects these (on a GPU too)


def test_embedding_is_unit_norm_l2_and_l1():
    key = jax.random.PRNGKey(0)
    e2 = TaskEmbedding(key, 5, 32, "l2")(jnp.arange(5))
    np.testing.assert_allclose(jnp.linalg.norm(e2, axis=-1), 1.0, rtol=1e-6)
    e1 = TaskEmbedding(key, 5, 32, "l1")(jnp.arange(5))
    np.testing.assert_allclose(jnp.sum(jnp.abs(e1), axis=-1), 1.0, rtol=1e-6)


def test_embedding_init_is_normal_with_std_one_over_sqrt_dim():
    table = TaskEmbedding(jax.random.PRNGKey(0), 2000, 32).table
    assert abs(float(jnp.std(table)) - 32 ** -0.5) < 0.005 and abs(float(jnp.mean(table))) < 0.005
    norms = jnp.linalg.norm(table, axis=-1)
    assert abs(float(jnp.mean(norms)) - 1.0) < 0.02  # rows of norm about 1 (chi with 32 dof / sqrt 32)


def test_heads_and_layer_norms_are_initialised_as_the_reference():
    """Orthogonal gain sqrt(2) for every kernel but the actor's log-std head (1.0); LN eps 1e-6."""
    from purejaxbrc.dqn import QNetwork

    def gain_squared(kernel):  # K^T K = g^2 I for an orthogonal [in >= out] kernel
        np.testing.assert_allclose(kernel.T @ kernel, kernel.T @ kernel * np.eye(kernel.shape[1]), atol=1e-4)
        return float(jnp.mean(jnp.diag(kernel.T @ kernel)))

    critic = CategoricalCritic(jax.random.PRNGKey(0), 6, 32, 1, 11, num_critics=2, num_tasks=3)
    actor = TanhGaussianActor(jax.random.PRNGKey(1), 5, 3, 32, 1)
    qnet = QNetwork(jax.random.PRNGKey(2), (10, 10, 2), 4, 11, 64, 1, (3,), num_tasks=2)
    for c in range(2):
        assert abs(gain_squared(critic.heads.kernel[c]) - 2.0) < 1e-4
    assert abs(gain_squared(actor.mean_head.kernel) - 2.0) < 1e-4
    assert abs(gain_squared(actor.log_std_head.kernel) - 1.0) < 1e-4
    assert abs(gain_squared(qnet.head.kernel) - 2.0) < 1e-4  # [64, 4 actions x 11 atoms]
    norms = [m for tree in (critic, actor, qnet) for m in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, LayerNorm))
             if isinstance(m, LayerNorm)]
    assert len(norms) == 3 * 3 and all(m.eps == 1e-6 for m in norms)  # stem + one block, each


def test_padding_and_action_slicing():
    x = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(pad_last_axis(x, 5), [[0, 1, 2, 0, 0], [3, 4, 5, 0, 0]])
    img = jnp.ones((10, 10, 4))
    padded = pad_last_axis(img, 7)
    assert padded.shape == (10, 10, 7) and float(padded[..., 4:].sum()) == 0.0
    np.testing.assert_array_equal(task_action(jnp.array([1.0, -2.0, 3.0, 9.0]), 2), [1.0, -2.0])
    np.testing.assert_array_equal(valid_action_mask([2, 3], 3), [[True, True, False], [True, True, True]])


def test_bronet_structure_and_orthogonal_init():
    net = BroNet(jax.random.PRNGKey(0), 7, 64, 2)
    assert len(net.blocks) == 2
    w = net.blocks[0].dense1.kernel
    np.testing.assert_allclose(w.T @ w, 2.0 * np.eye(64), atol=1e-4)  # orthogonal, gain sqrt(2)
    assert float(jnp.abs(net.blocks[0].dense1.bias).sum()) == 0.0
    assert net(jnp.ones((3, 7))).shape == (3, 64)


def test_matmul_gradient_equals_the_plain_products():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x, w = jax.random.normal(k1, (2, 5, 7)), jax.random.normal(k2, (7, 3))
    g = jax.random.normal(k3, (2, 5, 3))
    loss = lambda f: lambda x, w: jnp.sum(f(x, w) * g)  # noqa: E731
    got = jax.grad(loss(matmul), argnums=(0, 1))(x, w)
    want = jax.grad(loss(jnp.matmul), argnums=(0, 1))(x, w)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # under vmap (the critic ensemble) too
    ws = jnp.stack([w, 2 * w])
    got = jax.grad(lambda ws: jnp.sum(jax.vmap(lambda w: matmul(x, w))(ws) ** 2))(ws)
    want = jax.grad(lambda ws: jnp.sum(jax.vmap(lambda w: x @ w)(ws) ** 2))(ws)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_layer_norm_and_its_gradient_equal_the_textbook_formula():
    def textbook(x, scale, bias, eps=1e-6):
        mean = jnp.mean(x, -1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
        return (x - mean) / jnp.sqrt(var + eps) * scale + bias

    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
    x = 3.0 * jax.random.normal(k1, (2, 16, 64)) + 1.5
    norm = LayerNorm(64)
    norm = eqx.tree_at(lambda n: (n.scale, n.bias), norm,
                       (1.0 + jax.random.normal(k2, (64,)), jax.random.normal(k3, (64,))))
    np.testing.assert_allclose(norm(x), textbook(x, norm.scale, norm.bias), rtol=1e-5, atol=1e-5)
    g = jax.random.normal(k4, x.shape)
    got = jax.grad(lambda x, n: jnp.sum(n(x) * g), argnums=(0, 1))(x, norm)
    want = jax.grad(lambda x, s, b: jnp.sum(textbook(x, s, b) * g), argnums=(0, 1, 2))(x, norm.scale, norm.bias)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1].scale, want[1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[1].bias, want[2], rtol=1e-4, atol=1e-4)
    # under vmap with per-member parameters (the critic ensemble)
    norms = jax.vmap(lambda s: eqx.tree_at(lambda n: n.scale, norm, s))(jnp.stack([norm.scale, 2 * norm.scale]))
    got = jax.grad(lambda ns: jnp.sum(jax.vmap(lambda n: n(x[0]))(ns) ** 2))(norms)
    want = jax.grad(lambda s: jnp.sum(jax.vmap(lambda s: textbook(x[0], s, norm.bias))(s) ** 2))(norms.scale)
    np.testing.assert_allclose(got.scale, want, rtol=1e-4, atol=1e-4)


def test_critic_ensemble_is_independent_and_conditioned_on_task():
    critic = CategoricalCritic(jax.random.PRNGKey(0), 6, 32, 1, 101, num_critics=2, num_tasks=3)
    obs, act = jnp.ones((4, 4)), jnp.zeros((4, 2))
    logits = critic(obs, act, jnp.array([0, 1, 2, 0]))
    assert logits.shape == (2, 4, 101)
    assert not np.allclose(logits[0], logits[1])  # separate parameters per critic
    assert not np.allclose(logits[:, 0], logits[:, 1])  # the task embedding matters
    np.testing.assert_allclose(logits[:, 0], logits[:, 3])
    single = CategoricalCritic(jax.random.PRNGKey(0), 6, 32, 1, 101, num_tasks=1)
    assert single.embedding is None


def test_actor_log_std_range_and_log_prob():
    actor = TanhGaussianActor(jax.random.PRNGKey(0), 5, 3, 32, 1)
    x = 100.0 * jax.random.normal(jax.random.PRNGKey(1), (64, 5))
    _, log_std = actor(x)
    assert float(log_std.min()) >= -10.0 and float(log_std.max()) <= 2.0
    a, logp = actor.sample(jnp.ones((1, 5)), jax.random.PRNGKey(2))
    assert float(jnp.abs(a).max()) < 1.0
    # log-prob by change of variables, computed the textbook way
    mean, log_std = actor(jnp.ones((1, 5)))
    u = jnp.arctanh(jnp.clip(a, -1 + 1e-6, 1 - 1e-6))
    std = jnp.exp(log_std)
    ref = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi) - jnp.log(1 - a ** 2)).sum(-1)
    np.testing.assert_allclose(logp, ref, rtol=1e-3)


def _householder_qr_reduced_columns(g):
    """Plain-numpy Householder QR (LAPACK's convention, float64): the column each reflector is
    built from (rows j.. of column j after the earlier reflections), stacked as geqrf sees them."""
    a, k = np.array(g, np.float64), g.shape[1]
    seen = np.zeros_like(a)
    for j in range(k):
        x = a[j:, j].copy()
        seen[j:, j] = x
        alpha, tail = x[0], np.linalg.norm(x[1:])
        if tail == 0:
            continue
        beta = -np.copysign(np.hypot(alpha, tail), alpha)
        v = x / (alpha - beta)
        v[0] = 1.0
        a[j:, :] -= (beta - alpha) / beta * np.outer(v, v @ a[j:, :])
    return seen


@pytest.mark.parametrize("shape", [(5, 5), (7, 3), (1, 1)])
def test_orthogonal_equals_qr_of_the_gaussian_its_reflectors_come_from(shape):
    """Fed the columns a Householder QR of G reduces, `haar_columns` gives Q of G's QR with R's
    diagonal made positive: what jax.nn.initializers.orthogonal returns for G."""
    g = np.asarray(jax.random.normal(jax.random.PRNGKey(3), shape), np.float64)
    q, r = np.linalg.qr(g)
    want = q * np.sign(np.diag(r))
    got = haar_columns(jnp.asarray(_householder_qr_reduced_columns(g), jnp.float32))
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_orthogonal_shapes_gain_and_haar_moments():
    for shape in [(6, 4), (4, 6), (3, 3, 2, 5)]:
        w = np.asarray(orthogonal(jax.random.PRNGKey(0), shape, 1.5)).reshape(-1, shape[-1])
        gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        np.testing.assert_allclose(gram, 2.25 * np.eye(len(gram)), atol=1e-5)
    # Haar on O(3): E[q00] = 0, E[q00^2] = 1/3, E[q00^4] = 3/15, E[tr] = 0, E[tr^2] = 1, det = +-1
    # with probability 1/2 each; 20000 draws, bounds of at least 4 standard errors.
    q = np.asarray(jax.vmap(lambda k: orthogonal(k, (3, 3)))(jax.random.split(jax.random.PRNGKey(1), 20000)))
    n, q00, tr = len(q), q[:, 0, 0], np.trace(q, axis1=1, axis2=2)
    assert abs(q00.mean()) < 4 * np.sqrt(1 / 3 / n)
    assert abs((q00 ** 2).mean() - 1 / 3) < 0.01 and abs((q00 ** 4).mean() - 0.2) < 0.01
    assert abs(tr.mean()) < 4 / np.sqrt(n) and abs((tr ** 2).mean() - 1.0) < 0.05
    assert abs((np.linalg.det(q) > 0).mean() - 0.5) < 4 * np.sqrt(0.25 / n)


def test_orthogonal_init_is_the_same_on_one_core_and_two():
    """The initial networks do not depend on how many cores XLA:CPU and OpenBLAS may use (under
    `one_blas_thread` to the end of the computation, as `Program.fresh_state` builds them:
    JAX dispatches asynchronously, and a LAPACK call still running once the limit is lifted
    may split over OpenBLAS's threads): an init on one core and on two, vmapped and not."""
    import os
    import subprocess
    import sys
    import shutil
    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2 or not shutil.which("taskset"):
        pytest.skip("needs two cores and taskset")
    code = ("import hashlib, jax, numpy as np\n"
            "from purejaxbrc.orthogonal import orthogonal\n"
            "from purejaxbrc.program import one_blas_thread\n"
            "keys = jax.random.split(jax.random.PRNGKey(0), 2)\n"
            "with one_blas_thread():\n"
            "    w = jax.block_until_ready(jax.jit(jax.vmap(lambda k: orthogonal(k, (512, 384), 1.4)))(keys))\n"
            "    v = jax.block_until_ready(jax.jit(lambda k: orthogonal(k, (300, 700)))(keys[0]))\n"
            "print(hashlib.sha256(np.asarray(w).tobytes() + np.asarray(v).tobytes()).hexdigest())\n")
    cores = sorted(os.sched_getaffinity(0))[:2]
    out = [subprocess.run(["taskset", "-c", ",".join(map(str, c)), sys.executable, "-c", code], check=True,
                          capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu")).stdout.split()[-1]
           for c in (cores[:1], cores)]
    assert out[0] == out[1]
