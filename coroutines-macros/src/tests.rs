//! Checks of the exact expansion against the facade's contract. The behaviour
//! of the expanded code, and the error messages as users see them, are tested
//! in the workspace's `tests/macros.rs` and `tests/ui`.

use proc_macro2::TokenStream;
use quote::quote;

use crate::expand::{expand, Kind};

/// Compares token streams as text without whitespace, since the spacing of
/// punctuation (`>>` against `> >`) depends on how a token was produced.
fn assert_expands(kind: Kind, args: TokenStream, item: TokenStream, expected: TokenStream) {
    let text = |tokens: TokenStream| tokens.to_string().replace(char::is_whitespace, "");
    assert_eq!(text(expand(kind, args, item)), text(expected));
}

#[test]
fn main_without_arguments_or_return_type() {
    assert_expands(
        Kind::Main,
        quote!(),
        quote! {
            /// Docs.
            pub fn main() {
                #![allow(unused)]
                let x = 1;
            }
        },
        quote! {
            #[doc = r" Docs."]
            pub fn main() {
                #![allow(unused)]
                ::coroutines::__private::main(
                    ::coroutines::Runtime::builder(),
                    move || -> () { let x = 1; }
                )
            }
        },
    );
}

#[test]
fn main_with_every_argument_keeps_their_order() {
    assert_expands(
        Kind::Main,
        quote!(stack_size = 0x1_0000, workers = 4u32, work_stealing = true,),
        quote!(
            fn main() -> () {}
        ),
        quote! {
            fn main() -> () {
                ::coroutines::__private::main(
                    ::coroutines::Runtime::builder()
                        .stack_size(65536usize)
                        .workers(4usize)
                        .work_stealing(true),
                    move || -> () {}
                )
            }
        },
    );
}

#[test]
fn main_with_a_return_type_reports_it() {
    assert_expands(
        Kind::Main,
        quote!(workers = 1),
        quote! {
            fn main() -> Result<(), Box<dyn Error>> {
                run()?;
                Ok(())
            }
        },
        quote! {
            fn main() -> ::std::process::ExitCode {
                ::coroutines::__private::main_report(
                    ::coroutines::Runtime::builder().workers(1usize),
                    move || -> Result<(), Box<dyn Error>> {
                        run()?;
                        Ok(())
                    }
                )
            }
        },
    );
}

#[test]
fn test_adds_the_test_attribute_and_keeps_the_others() {
    assert_expands(
        Kind::Test,
        quote!(),
        quote! {
            #[should_panic(expected = "boom")]
            fn panics() { panic!("boom") }
        },
        quote! {
            #[::core::prelude::v1::test]
            #[should_panic(expected = "boom")]
            fn panics() {
                ::coroutines::__private::test(
                    ::coroutines::Runtime::builder(),
                    move || -> () { panic!("boom") }
                )
            }
        },
    );
}

#[test]
fn test_with_a_return_type_reports_it() {
    assert_expands(
        Kind::Test,
        quote!(work_stealing = false),
        quote!(
            fn fallible() -> Result<(), String> {
                Ok(())
            }
        ),
        quote! {
            #[::core::prelude::v1::test]
            fn fallible() -> ::std::process::ExitCode {
                ::coroutines::__private::test_report(
                    ::coroutines::Runtime::builder().work_stealing(false),
                    move || -> Result<(), String> { Ok(()) }
                )
            }
        },
    );
}

#[test]
fn errors_keep_the_function_unchanged() {
    let item = quote!(
        async fn main(x: u8) {}
    );
    let output = expand(Kind::Main, quote!(workers = 0, foo = 1), item.clone()).to_string();
    assert!(output.starts_with(&item.to_string()), "{output}");
    for message in [
        "`workers` must be at least 1",
        "unknown argument `foo`",
        "the `async` keyword is not needed",
        "functions cannot take parameters",
    ] {
        assert!(output.contains(message), "missing {message:?} in {output}");
    }
}
