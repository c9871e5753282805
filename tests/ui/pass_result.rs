// An explicit `Termination` return type: `?` works in the body and `Ok` ends
// the program successfully.

#[derive(Debug)]
struct NotANumber;

impl std::fmt::Display for NotANumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a number")
    }
}

impl std::error::Error for NotANumber {}

fn parse(text: &str) -> Result<u32, NotANumber> {
    text.parse().map_err(|_| NotANumber)
}

#[coroutines::main(workers = 1)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    assert!(coroutines::in_coroutine());
    let n = parse("42")?;
    assert_eq!(n, 42);
    assert!(parse("forty-two").is_err());
    let m: u32 = "7".parse()?;
    assert_eq!(m, 7);
    Ok(())
}
