// Every problem is reported at once.
#[coroutines::main(workers = 0, flavor = "multi_thread", work_stealing = "yes")]
async fn main(_argc: i32) {}
