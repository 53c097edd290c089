//! What every loom model file shares.

/// The preemption bound a model runs with unless `LOOM_MAX_PREEMPTIONS`
/// sets one. Each model file's docs say what this bound costs and catches
/// for its protocol.
pub const DEFAULT_PREEMPTIONS: usize = 3;

/// `loom::model`, with a preemption bound of [`DEFAULT_PREEMPTIONS`] unless
/// `LOOM_MAX_PREEMPTIONS` sets one.
pub fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(DEFAULT_PREEMPTIONS);
    builder.check(f);
}
