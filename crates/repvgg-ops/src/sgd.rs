//! One step of SGD with momentum (no dampening, optional Nesterov) and weight decay as one pass
//! over a parameter, its gradient and its velocity, in place where the values are not shared.
//! Burn's optimizer takes a pass, and a new tensor, for each of the five operations.

use rayon::prelude::*;

/// The step's hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

/// Values per parallel task.
const CHUNK: usize = 1 << 14;

/// Updates `param` and `velocity` from `grad`: `g = grad + weight_decay param`,
/// `velocity = momentum velocity + g` (just `g` on the first step, when `first`), and
/// `param -= lr (g + momentum velocity)` with Nesterov, `param -= lr velocity` without.
pub fn step(param: &mut [f32], velocity: &mut [f32], grad: &[f32], first: bool, sgd: &Sgd) {
    assert_eq!(
        param.len(),
        grad.len(),
        "the gradient has the parameter's shape"
    );
    assert_eq!(
        param.len(),
        velocity.len(),
        "the velocity has the parameter's shape"
    );
    let (lr, momentum, decay) = (sgd.lr as f32, sgd.momentum as f32, sgd.weight_decay as f32);
    let keep = if first { 0.0 } else { momentum };
    param
        .par_chunks_mut(CHUNK)
        .zip(velocity.par_chunks_mut(CHUNK))
        .zip(grad.par_chunks(CHUNK))
        .for_each(|((param, velocity), grad)| {
            for ((p, v), &g) in param.iter_mut().zip(velocity.iter_mut()).zip(grad) {
                let g = g + decay * *p;
                *v = keep * *v + g;
                let update = if sgd.nesterov { g + momentum * *v } else { *v };
                *p -= lr * update;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_steps_follow_pytorchs_formulas() {
        for nesterov in [false, true] {
            let sgd = Sgd {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 0.01,
                nesterov,
            };
            let (mut param, mut velocity) = (vec![1.0f32, -2.0], vec![0.0f32; 2]);
            let grads = [[0.5f32, 0.25], [-1.0, 2.0]];
            let (mut p, mut v) = ([1.0f64, -2.0], [0.0f64; 2]);
            for (i, grad) in grads.iter().enumerate() {
                step(&mut param, &mut velocity, grad, i == 0, &sgd);
                for j in 0..2 {
                    let g = grad[j] as f64 + 0.01 * p[j];
                    v[j] = if i == 0 { g } else { 0.9 * v[j] + g };
                    p[j] -= 0.1 * if nesterov { g + 0.9 * v[j] } else { v[j] };
                    assert!((param[j] as f64 - p[j]).abs() < 1e-6, "{nesterov} step {i}");
                    assert!((velocity[j] as f64 - v[j]).abs() < 1e-6);
                }
            }
        }
    }
}
