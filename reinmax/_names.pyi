# The public estimator functions as a type checker sees them: one list for `reinmax` and every
# backend module (each imports it under TYPE_CHECKING). At run time the functions come from the
# registry (reinmax.api.Functions); tests/test_typing.py checks that the two agree.
from reinmax.functions import (
    Bernoulli,
    ControlVariateEstimator,
    Estimate,
    EstimatorFunction,
    GappedEstimator,
    GumbelSoftmax,
    Reinforce,
    SampledEstimator,
)

estimate: Estimate
reinforce: Reinforce
bernoulli: Bernoulli
straight_through: EstimatorFunction
gumbel_softmax: GumbelSoftmax
gumbel_rao: SampledEstimator
gapped_straight_through: GappedEstimator
reinmax: EstimatorFunction
zgr: EstimatorFunction
reinmax_rao: SampledEstimator
reinmax_cv: ControlVariateEstimator
