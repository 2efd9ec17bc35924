//! The worker refuses malformed or mis-shaped requests with an error, never a panic.

use veil_net::Channel;
use veil_split::msgs::{Reply, Request};
use veil_split::network::{Architecture, Model};
use veil_split::trusted::load_model;

use crate::spawn_worker;

#[test]
fn wrong_shapes_get_a_failure_reply_and_garbage_ends_the_session() {
    let (mut channel, worker) = spawn_worker(1);
    let ask = |channel: &mut veil_net::MemoryChannel, request: Request| {
        channel.send(&request.encode()).expect("sends");
        Reply::decode(&channel.recv().expect("replies")).expect("decodes")
    };
    // Before any model.
    let reply = ask(
        &mut channel,
        Request::ConvForward {
            layer: 0,
            batch: 1,
            keep: false,
            residual: vec![0.0; 784],
        },
    );
    assert!(matches!(reply, Reply::Failure(_)), "{reply:?}");
    let model = Model::new(Architecture::VggSmall, 3);
    load_model(&mut channel, &model, &mut Default::default()).expect("loads");
    for request in [
        Request::ConvForward {
            layer: 9,
            batch: 1,
            keep: false,
            residual: vec![],
        },
        Request::ConvForward {
            layer: 1,
            batch: 2,
            keep: false,
            residual: vec![0.0; 5],
        },
        Request::ConvForward {
            layer: 1,
            batch: 0,
            keep: false,
            residual: vec![],
        },
        Request::ConvBackward {
            layer: 1,
            batch: 1,
            need_input: true,
            grad_output: vec![0.0; 3],
        },
        Request::BlindedForward {
            layer: 0,
            batch: 1,
            blinded: vec![1; 7],
        },
        Request::WholeForward {
            batch: 1,
            images: vec![0.0; 10],
        },
        Request::WholeTrainStep {
            batch: 1,
            images: vec![0.0; 784],
            labels: vec![10],
            learning_rate: 0.1,
        },
        Request::LoadModel {
            architecture: Architecture::VggSmall,
            width: 16,
            parameters: vec![],
        },
    ] {
        let reply = ask(&mut channel, request.clone());
        assert!(
            matches!(reply, Reply::Failure(_)),
            "{request:?} got {reply:?}"
        );
    }
    // A frame that is not a request: a failure reply, then the worker stops with an error.
    channel.send(&[0x42, 1, 2]).expect("sends");
    assert!(matches!(
        Reply::decode(&channel.recv().expect("replies")).expect("decodes"),
        Reply::Failure(_)
    ));
    assert!(worker.join().expect("joins").is_err());
}
