"""RAdam for Keras, which ships Adam but no RAdam; used by the TensorFlow trainers."""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["RAdam"]


class RAdam(keras.optimizers.Optimizer):
    """Rectified Adam (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate").

    With ``ρ∞ = 2/(1 − β₂) − 1`` and ``ρ_t = ρ∞ − 2 t β₂ᵗ/(1 − β₂ᵗ)``: while ``ρ_t ≤ 5`` the step is
    ``lr · m̂_t`` (momentum SGD); afterwards ``lr · r_t · m̂_t · √(1 − β₂ᵗ)/(√v_t + ε)`` with the
    rectification ``r_t = √((ρ_t − 4)(ρ_t − 2)ρ∞ / ((ρ∞ − 4)(ρ∞ − 2)ρ_t))``. The same rule as
    ``torch.optim.RAdam`` and ``optax.radam``.
    """

    def __init__(
        self,
        learning_rate: float = 1e-3,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        name: str = "radam",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def build(self, var_list: list) -> None:
        """Create the first and second moments of every variable."""
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(
            var_list, ["momentum", "velocity"]
        )

    def update_step(self, gradient, variable, learning_rate) -> None:
        """Apply one RAdam update to ``variable``."""
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        beta_1 = ops.cast(self.beta_1, variable.dtype)
        beta_2 = ops.cast(self.beta_2, variable.dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - beta_2))
        beta_2_power = ops.power(beta_2, step)
        m_hat = ops.divide(m, 1 - ops.power(beta_1, step))
        rho_inf = 2 / (1 - beta_2) - 1
        rho = rho_inf - 2 * step * beta_2_power / (1 - beta_2_power)
        # Clamped inside the square root so the branch not taken stays finite.
        rect = ops.sqrt(
            ops.maximum((rho - 4) * (rho - 2) * rho_inf, 0.0)
            / ((rho_inf - 4) * (rho_inf - 2) * rho)
        )
        adaptive = rect * ops.sqrt(1 - beta_2_power) / (ops.sqrt(v) + self.epsilon)
        scale = ops.where(rho > 5.0, adaptive, ops.ones_like(v))
        self.assign_sub(variable, lr * m_hat * scale)

    def get_config(self) -> dict:
        """Keras serialization."""
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
        return config
