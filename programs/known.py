"""The library of known programs, written with named hyperparameters.

A known program's template reads its hyperparameters (``beta1``, ``weight_decay``, ...)
as if they were inputs. ``program()`` substitutes the default values to give an ordinary
program for search; export keeps the names as constructor arguments. In an optimizer
template ``lr`` is the learning rate itself: the search form starts with
``lr = lr * <default lr>`` because the search feeds the schedule's value (1.0 at start).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .program import Instruction, Program, ProgramError, parse_program


@dataclass(frozen=True)
class KnownProgram:
    name: str
    class_name: str
    family: str
    template: str
    defaults: dict[str, float] = field(default_factory=dict)
    description: str = ""

    def template_program(self) -> Program:
        return parse_program(self.template)

    def program(self, **overrides: float) -> Program:
        """The search form, with hyperparameters replaced by their values."""
        values = {**self.defaults, **overrides}
        body = substitute(self.template_program(), {k: v for k, v in values.items()
                                                    if k != "lr"})
        if "lr" in values:
            body = Program((Instruction("lr", "mul", ("lr", float(values["lr"]))),)
                           + body.instructions)
        return body


def substitute(program: Program, values: dict[str, float]) -> Program:
    """Replace reads of the named variables by constants."""
    return Program(tuple(
        Instruction(ins.out, ins.op, tuple(float(values[a]) if isinstance(a, str)
                                           and a in values else a for a in ins.args))
        for ins in program.instructions))


_ADAM_BODY = """\
m = interp(g, m, beta1)
g2 = square(g)
v = interp(g2, v, beta2)
bc1 = power(beta1, step)
bc1 = invert(bc1)
bc2 = power(beta2, step)
bc2 = invert(bc2)
m_hat = m / bc1
v_hat = v / bc2
denom = sqrt(v_hat)
denom = denom + eps
update = m_hat / denom
"""

KNOWN: dict[str, KnownProgram] = {k.name: k for k in [
    KnownProgram(
        "sgd", "SGD", "optimizer",
        "update = g * lr",
        {"lr": 0.01},
        "plain stochastic gradient descent"),
    KnownProgram(
        "momentum", "Momentum", "optimizer",
        "m = m * momentum\nm = m + g\nupdate = m * lr",
        {"lr": 0.01, "momentum": 0.9},
        "heavy-ball momentum, as torch.optim.SGD(momentum=...)"),
    KnownProgram(
        "rmsprop", "RMSprop", "optimizer",
        "g2 = square(g)\nv = interp(g2, v, alpha)\nrms = sqrt(v)\nrms = rms + eps\n"
        "update = g / rms\nupdate = update * lr",
        {"lr": 0.01, "alpha": 0.99, "eps": 1e-8},
        "RMSProp, as torch.optim.RMSprop"),
    KnownProgram(
        "adam", "Adam", "optimizer",
        _ADAM_BODY + "update = update * lr",
        {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
        "Adam with bias correction, as torch.optim.Adam"),
    KnownProgram(
        "adamw", "AdamW", "optimizer",
        _ADAM_BODY + "wd = w * weight_decay\nupdate = update + wd\nupdate = update * lr",
        {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
        "AdamW with bias correction and decoupled weight decay, as torch.optim.AdamW"),
    KnownProgram(
        "adamw_paper", "AdamWPaper", "optimizer",
        "g2 = square(g)\nm = interp(g, m, beta1)\nv = interp(g2, v, beta2)\n"
        "sqrt_v = sqrt(v)\nupdate = m / sqrt_v\nwd = w * weight_decay\n"
        "update = update + wd\nupdate = update * lr",
        {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.01},
        "the Lion paper's AdamW seed: no bias correction, no eps"),
    KnownProgram(
        "lion", "Lion", "optimizer",
        "c = interp(g, m, beta1)\nupdate = sign(c)\nwd = w * weight_decay\n"
        "update = update + wd\nupdate = update * lr\nm = interp(g, m, beta2)",
        {"lr": 1e-4, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.0},
        "Lion (Chen et al. 2023): sign of interpolated momentum"),
    KnownProgram(
        "signsgd", "SignSGD", "optimizer",
        "update = sign(g)\nupdate = update * lr",
        {"lr": 1e-4},
        "sign of the gradient"),
    KnownProgram(
        "signum", "Signum", "optimizer",
        "m = interp(g, m, beta)\nupdate = sign(m)\nupdate = update * lr",
        {"lr": 1e-4, "beta": 0.9},
        "sign of momentum (Bernstein et al. 2018)"),
    KnownProgram(
        "powersign", "PowerSign", "optimizer",
        "m = interp(g, m, beta)\nsg = sign(g)\nsm = sign(m)\nagree = sg * sm\n"
        "scale = exp(agree)\nupdate = scale * g\nupdate = update * lr",
        {"lr": 0.01, "beta": 0.9},
        "PowerSign (Bello et al. 2017): e^(sign(g) sign(m)) * g"),
    KnownProgram(
        "addsign", "AddSign", "optimizer",
        "m = interp(g, m, beta)\nsg = sign(g)\nsm = sign(m)\nagree = sg * sm\n"
        "scale = agree + alpha\nupdate = scale * g\nupdate = update * lr",
        {"lr": 0.01, "beta": 0.9, "alpha": 1.0},
        "AddSign (Bello et al. 2017): (alpha + sign(g) sign(m)) * g"),
]}


_RELU = "y = max(n, 0.0)"

KNOWN_LAYERS: dict[str, KnownProgram] = {k.name: k for k in [
    KnownProgram(
        "bn_relu", "BNReLU", "layer",
        "mu = batch_mean(x)\nnmu = negative(mu)\nd = x + nmu\ns = batch_std(x)\n"
        "n = d / s\n" + _RELU, {},
        "batch norm then ReLU (running averages in eval mode)"),
    KnownProgram(
        "gn_relu", "GNReLU", "layer",
        "mu = group_mean(x)\nnmu = negative(mu)\nd = x + nmu\ns = group_std(x)\n"
        "n = d / s\n" + _RELU, {},
        "group norm then ReLU"),
    KnownProgram(
        "ln_relu", "LNReLU", "layer",
        "mu = layer_mean(x)\nnmu = negative(mu)\nd = x + nmu\ns = layer_std(x)\n"
        "n = d / s\n" + _RELU, {},
        "layer norm (over C, H, W) then ReLU"),
    KnownProgram(
        "evonorm_b0", "EvoNormB0", "layer",
        "s = batch_std(x)\na = v1 * x\ni = instance_std(x)\nb = a + i\nd = max(s, b)\n"
        "y = x / d", {},
        "EvoNorm-B0 (Liu et al. 2020): x / max(sqrt(var_NHW(x)+eps), v1*x + "
        "sqrt(var_HW(x)+eps))"),
    KnownProgram(
        "evonorm_s0", "EvoNormS0", "layer",
        "a = v1 * x\ng = sigmoid(a)\nn = x * g\ns = group_std(x)\ny = n / s", {},
        "EvoNorm-S0 (Liu et al. 2020): x * sigmoid(v1*x) / sqrt(var_HWC/G(x)+eps)"),
    KnownProgram(
        "evonorm_s1", "EvoNormS1", "layer",
        "g = sigmoid(x)\nn = x * g\ns = group_std(x)\ny = n / s", {},
        "EvoNorm-S1: x * sigmoid(x) / sqrt(var_HWC/G(x)+eps), S0 without v1"),
]}
"""Known normalization-activation layers (family "layer"); kept apart from ``KNOWN``,
whose entries are all optimizers."""


def get_known(name: str) -> KnownProgram:
    """A known optimizer or layer by name (case-insensitive)."""
    try:
        return {**KNOWN, **KNOWN_LAYERS}[name.lower()]
    except KeyError:
        raise ProgramError(
            f"no known program named {name!r} (see `evoprog known`)") from None
