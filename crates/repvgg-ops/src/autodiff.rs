//! The ops under autodiff: each forward pass registers a backward step that computes its
//! inputs' gradients with the inner backend's kernels.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, TensorMetadata};

use crate::TrainingOps;

/// The backward step: the ids of the input's and the weight's values, and the convolution.
#[derive(Debug)]
struct ConvBackward;

#[derive(Clone, Debug)]
struct ConvState {
    x: NodeId,
    weight: NodeId,
    stride: usize,
    padding: usize,
    groups: usize,
}

impl<B: TrainingOps> Backward<B, 2> for ConvBackward {
    type State = ConvState;

    fn backward(
        self,
        ops: Ops<ConvState, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        let output_grad = grads.consume::<B>(&ops.node);
        let ConvState {
            x,
            weight,
            stride,
            padding,
            groups,
        } = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight);
        if let Some(node) = node_x {
            let [_, _, height, width] = x.shape().dims();
            let grad = B::repvgg_conv2d_input_grad(
                weight.clone(),
                output_grad.clone(),
                height,
                width,
                stride,
                padding,
                groups,
            );
            grads.register::<B>(node.id, grad);
        }
        if let Some(node) = node_weight {
            let grad =
                B::repvgg_conv2d_weight_grad(x, weight, output_grad, stride, padding, groups);
            grads.register::<B>(node.id, grad);
        }
    }
}

/// The batch normalization's backward step: the ids of the input's and `gamma`'s values, and
/// the batch statistics as the forward pass computed them.
#[derive(Debug)]
struct BatchNormBackward;

impl<B: TrainingOps> Backward<B, 3> for BatchNormBackward {
    type State = (NodeId, NodeId, FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let output_grad = grads.consume::<B>(&ops.node);
        let (x, gamma, mean, variance, epsilon) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x);
        let gamma: FloatTensor<B> = checkpointer.retrieve_node_output(gamma);
        let (x_grad, gamma_grad, beta_grad) =
            B::repvgg_batch_norm_train_backward(x, gamma, mean, variance, epsilon, output_grad);
        for (node, grad) in [
            (node_x, x_grad),
            (node_gamma, gamma_grad),
            (node_beta, beta_grad),
        ] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// The block's backward step: the ids of the input's, both weights' and `gamma`'s values, and
/// what the forward pass returned (output, both convolutions, mean, variance).
#[derive(Debug)]
struct BlockBackward;

#[derive(Clone, Debug)]
struct BlockState<B: TrainingOps> {
    x: NodeId,
    dense_weight: NodeId,
    pointwise_weight: NodeId,
    gamma: NodeId,
    saved: [FloatTensor<B>; 5],
    stride: usize,
    groups: usize,
    epsilon: f64,
}

impl<B: TrainingOps> Backward<B, 5> for BlockBackward {
    type State = BlockState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 5>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_dense, node_pointwise, node_gamma, node_beta] = ops.parents;
        let output_grad = grads.consume::<B>(&ops.node);
        let state = ops.state;
        let [output, dense, pointwise, mean, variance] = state.saved;
        let (x_grad, dense_grad, pointwise_grad, gamma_grad, beta_grad) =
            B::repvgg_block_train_backward(
                checkpointer.retrieve_node_output(state.x),
                checkpointer.retrieve_node_output(state.dense_weight),
                checkpointer.retrieve_node_output(state.pointwise_weight),
                checkpointer.retrieve_node_output(state.gamma),
                output,
                dense,
                pointwise,
                mean,
                variance,
                output_grad,
                state.stride,
                state.groups,
                state.epsilon,
                node_x.is_some(),
            );
        for (node, grad) in [
            (node_x, x_grad),
            (node_dense, dense_grad),
            (node_pointwise, pointwise_grad),
            (node_gamma, gamma_grad),
            (node_beta, beta_grad),
        ] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: TrainingOps, C: CheckpointStrategy> TrainingOps for Autodiff<B, C> {
    fn repvgg_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> FloatTensor<Self> {
        match ConvBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = ConvState {
                    x: prep.checkpoint(&x),
                    weight: prep.checkpoint(&weight),
                    stride,
                    padding,
                    groups,
                };
                let (x, weight) = (x.into_primitive(), weight.into_primitive());
                prep.finish(state, B::repvgg_conv2d(x, weight, stride, padding, groups))
            }
            OpsKind::UnTracked(prep) => {
                let (x, weight) = (x.into_primitive(), weight.into_primitive());
                prep.finish(B::repvgg_conv2d(x, weight, stride, padding, groups))
            }
        }
    }

    /// The inner backend's gradient, itself not differentiated (untracked).
    fn repvgg_conv2d_input_grad(
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        height: usize,
        width: usize,
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::repvgg_conv2d_input_grad(
            weight.into_primitive(),
            output_grad.into_primitive(),
            height,
            width,
            stride,
            padding,
            groups,
        ))
    }

    /// The inner backend's gradient, itself not differentiated (untracked).
    fn repvgg_conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::repvgg_conv2d_weight_grad(
            x.into_primitive(),
            weight.into_primitive(),
            output_grad.into_primitive(),
            stride,
            padding,
            groups,
        ))
    }

    fn repvgg_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        match BatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let (x_id, gamma_id) = (prep.checkpoint(&x), prep.checkpoint(&gamma));
                let (output, mean, variance) = B::repvgg_batch_norm_train(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                let state = (x_id, gamma_id, mean.clone(), variance.clone(), epsilon);
                let output = prep.finish(state, output);
                (output, Self::from_inner(mean), Self::from_inner(variance))
            }
            OpsKind::UnTracked(prep) => {
                let (output, mean, variance) = B::repvgg_batch_norm_train(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                let output = prep.finish(output);
                (output, Self::from_inner(mean), Self::from_inner(variance))
            }
        }
    }

    /// The inner backend's gradients, themselves not differentiated (untracked).
    fn repvgg_batch_norm_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (x, gamma, beta) = B::repvgg_batch_norm_train_backward(
            x.into_primitive(),
            gamma.into_primitive(),
            mean.into_primitive(),
            variance.into_primitive(),
            epsilon,
            output_grad.into_primitive(),
        );
        (
            Self::from_inner(x),
            Self::from_inner(gamma),
            Self::from_inner(beta),
        )
    }

    fn repvgg_block_train(
        x: FloatTensor<Self>,
        dense_weight: FloatTensor<Self>,
        pointwise_weight: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stride: usize,
        groups: usize,
        epsilon: f64,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let parents = [
            x.node(),
            dense_weight.node(),
            pointwise_weight.node(),
            gamma.node(),
            beta.node(),
        ];
        let mut prepared = BlockBackward
            .prepare::<C>(parents)
            .compute_bound()
            .stateful();
        let ids = match &mut prepared {
            OpsKind::Tracked(prep) => Some([
                prep.checkpoint(&x),
                prep.checkpoint(&dense_weight),
                prep.checkpoint(&pointwise_weight),
                prep.checkpoint(&gamma),
            ]),
            OpsKind::UnTracked(_) => None,
        };
        let (output, dense, pointwise, mean, variance) = B::repvgg_block_train(
            x.into_primitive(),
            dense_weight.into_primitive(),
            pointwise_weight.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
            stride,
            groups,
            epsilon,
        );
        let output = match (prepared, ids) {
            (OpsKind::Tracked(prep), Some([x, dense_weight, pointwise_weight, gamma])) => {
                let saved = [
                    output.clone(),
                    dense.clone(),
                    pointwise.clone(),
                    mean.clone(),
                    variance.clone(),
                ];
                let state = BlockState {
                    x,
                    dense_weight,
                    pointwise_weight,
                    gamma,
                    saved,
                    stride,
                    groups,
                    epsilon,
                };
                prep.finish(state, output)
            }
            (OpsKind::Tracked(_), None) => unreachable!("a tracked op's inputs are checkpointed"),
            (OpsKind::UnTracked(prep), _) => prep.finish(output),
        };
        (
            output,
            Self::from_inner(dense),
            Self::from_inner(pointwise),
            Self::from_inner(mean),
            Self::from_inner(variance),
        )
    }

    /// The inner backend's gradients, themselves not differentiated (untracked).
    #[allow(clippy::too_many_arguments)]
    fn repvgg_block_train_backward(
        x: FloatTensor<Self>,
        dense_weight: FloatTensor<Self>,
        pointwise_weight: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        output: FloatTensor<Self>,
        dense: FloatTensor<Self>,
        pointwise: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        stride: usize,
        groups: usize,
        epsilon: f64,
        input_grad: bool,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let grads = B::repvgg_block_train_backward(
            x.into_primitive(),
            dense_weight.into_primitive(),
            pointwise_weight.into_primitive(),
            gamma.into_primitive(),
            output.into_primitive(),
            dense.into_primitive(),
            pointwise.into_primitive(),
            mean.into_primitive(),
            variance.into_primitive(),
            output_grad.into_primitive(),
            stride,
            groups,
            epsilon,
            input_grad,
        );
        (
            Self::from_inner(grads.0),
            Self::from_inner(grads.1),
            Self::from_inner(grads.2),
            Self::from_inner(grads.3),
            Self::from_inner(grads.4),
        )
    }

    /// The inner backend's step (an optimizer's, outside the graph).
    #[allow(clippy::too_many_arguments)]
    fn repvgg_sgd_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        velocity: FloatTensor<Self>,
        first: bool,
        lr: f64,
        momentum: f64,
        weight_decay: f64,
        nesterov: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (param, velocity) = B::repvgg_sgd_step(
            param.into_primitive(),
            grad.into_primitive(),
            velocity.into_primitive(),
            first,
            lr,
            momentum,
            weight_decay,
            nesterov,
        );
        (Self::from_inner(param), Self::from_inner(velocity))
    }
}
