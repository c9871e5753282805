//! Validation of the annotated function and its expansion.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{AttrStyle, Attribute, Item, ItemFn, ReturnType, Type};

use crate::args::{Args, Errors};

/// Which attribute is being expanded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Main,
    Test,
}

impl Kind {
    /// How the attribute is written, for error messages.
    fn attribute(self) -> &'static str {
        match self {
            Kind::Main => "`#[coroutines::main]`",
            Kind::Test => "`#[coroutines::test]`",
        }
    }
}

/// Expands `#[coroutines::main(args)]` or `#[coroutines::test(args)]` on `item`.
///
/// On any error the item is emitted unchanged, followed by the errors, so that
/// IDEs and later diagnostics still see the user's function.
pub(crate) fn expand(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let function = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(function)) => function,
        Ok(_) => {
            let message = format!("{} can only be applied to a function", kind.attribute());
            return with_error(item, syn::Error::new(Span::call_site(), message));
        }
        Err(e) => return with_error(item, e),
    };
    let mut errors = Errors::default();
    let args = Args::parse(args).unwrap_or_else(|e| {
        errors.push(e);
        Args::default()
    });
    check_signature(kind, &function, &mut errors);
    match errors.finish() {
        Ok(()) => generate(kind, &args, function),
        Err(e) => with_error(item, e),
    }
}

/// `item` followed by `error`'s `compile_error!`s.
fn with_error(mut item: TokenStream, error: syn::Error) -> TokenStream {
    item.extend(error.into_compile_error());
    item
}

/// Reports what the expansion cannot support: `async`, `const`, parameters,
/// generics, an `impl Trait` return type, and (for tests) a second `#[test]`.
fn check_signature(kind: Kind, function: &ItemFn, errors: &mut Errors) {
    let attribute = kind.attribute();
    let sig = &function.sig;
    if let Some(asyncness) = &sig.asyncness {
        errors.push(syn::Error::new(
            asyncness.span,
            format!(
                "the `async` keyword is not needed: {attribute} runs the function's ordinary \
                 blocking code in a coroutine; remove `async`"
            ),
        ));
    }
    if let Some(constness) = &sig.constness {
        errors.push(syn::Error::new(
            constness.span,
            format!("{attribute} cannot be used on a `const fn`"),
        ));
    }
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            format!("{attribute} functions cannot be generic"),
        ));
    } else if let Some(where_clause) = &sig.generics.where_clause {
        errors.push(syn::Error::new_spanned(
            where_clause,
            format!("{attribute} functions cannot have a `where` clause"),
        ));
    }
    if !sig.inputs.is_empty() || sig.variadic.is_some() {
        let inputs = sig.inputs.to_token_stream().into_iter();
        let variadic = sig.variadic.to_token_stream().into_iter();
        errors.push(syn::Error::new_spanned(
            inputs.chain(variadic).collect::<TokenStream>(),
            format!("{attribute} functions cannot take parameters"),
        ));
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        if let Type::ImplTrait(_) = strip_parens(ty) {
            errors.push(syn::Error::new_spanned(
                ty,
                format!(
                    "{attribute} functions cannot return `impl Trait`; \
                     write the concrete type, e.g. `Result<(), MyError>`"
                ),
            ));
        }
    }
    if kind == Kind::Test {
        for attr in function.attrs.iter().filter(|attr| is_test_attribute(attr)) {
            errors.push(syn::Error::new_spanned(
                attr,
                "this `#[test]` is redundant: `#[coroutines::test]` already adds one; remove it",
            ));
        }
    }
}

/// `#[test]` or a path to the standard one such as `#[::core::prelude::v1::test]`.
fn is_test_attribute(attr: &Attribute) -> bool {
    let segments = &attr.path().segments;
    match segments.len() {
        1 => segments[0].ident == "test",
        4 => {
            (segments[0].ident == "core" || segments[0].ident == "std")
                && segments[1].ident == "prelude"
                && segments[3].ident == "test"
        }
        _ => false,
    }
}

fn strip_parens(mut ty: &Type) -> &Type {
    loop {
        match ty {
            Type::Paren(inner) => ty = &inner.elem,
            Type::Group(inner) => ty = &inner.elem,
            _ => return ty,
        }
    }
}

/// The expansion proper, for a function that passed `check_signature`:
///
/// ```text
/// #[attrs] vis fn name() {                    // no return type, or `-> ()`
///     ::coroutines::__private::main(BUILDER, move || -> () { body })
/// }
/// #[attrs] vis fn name() -> ::std::process::ExitCode {   // `-> R`
///     ::coroutines::__private::main_report(BUILDER, move || -> R { body })
/// }
/// ```
///
/// `test`/`test_report` instead of `main`/`main_report` for tests, which also
/// get `#[::core::prelude::v1::test]`. `BUILDER` is
/// `::coroutines::Runtime::builder()` followed by one call per argument.
fn generate(kind: Kind, args: &Args, function: ItemFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        mut sig,
        block,
    } = function;
    // syn stores the body's inner attributes (`#![allow(...)]`) with the outer
    // ones; they stay at the top of the generated function's body.
    let (inner, outer): (Vec<_>, Vec<_>) = attrs
        .into_iter()
        .partition(|attr| matches!(attr.style, AttrStyle::Inner(_)));
    let builder = args.builder();
    let (run, run_report) = match kind {
        Kind::Main => (quote!(main), quote!(main_report)),
        Kind::Test => (quote!(test), quote!(test_report)),
    };
    let call = match &sig.output {
        // The `-> ()` annotation makes a stray tail expression (`fn main() { 5 }`)
        // an error at the user's expression, as it would be without the macro.
        ReturnType::Default => quote! {
            ::coroutines::__private::#run(#builder, move || -> () #block)
        },
        ReturnType::Type(_, ty) if is_unit(ty) => quote! {
            ::coroutines::__private::#run(#builder, move || -> #ty #block)
        },
        // Spanned on the return type, so that "`R` is not `Termination`" points
        // at it, as rustc's own check of `main` does.
        ReturnType::Type(_, ty) => {
            let call = quote_spanned! {ty.span()=>
                ::coroutines::__private::#run_report(#builder, move || -> #ty #block)
            };
            sig.output = syn::parse_quote_spanned! {ty.span()=>
                -> ::std::process::ExitCode
            };
            call
        }
    };
    let test = match kind {
        Kind::Main => quote!(),
        Kind::Test => quote!(#[::core::prelude::v1::test]),
    };
    quote! {
        #test
        #(#outer)*
        #vis #sig {
            #(#inner)*
            #call
        }
    }
}

fn is_unit(ty: &Type) -> bool {
    matches!(strip_parens(ty), Type::Tuple(tuple) if tuple.elems.is_empty())
}
