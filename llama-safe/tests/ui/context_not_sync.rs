// A context must not be used from two threads at once: it is not Sync.
fn shared<T: Sync>() {}

fn main() {
    shared::<llama_safe::LlamaContext>();
}
