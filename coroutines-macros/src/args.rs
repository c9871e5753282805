//! Parsing and validation of the attribute arguments
//! (`workers = N, work_stealing = bool, stack_size = BYTES,
//! main_stack_size = BYTES, thread_identity = bool, blocking_threads = N`).

use proc_macro2::{Ident, Spacing, Span, TokenStream, TokenTree};
use quote::{quote, ToTokens};
use syn::{Expr, ExprLit, ExprUnary, Lit, LitBool, LitInt, UnOp};

/// The names accepted as arguments, in the order the errors list them.
const KNOWN: [&str; 6] = [
    "workers",
    "work_stealing",
    "stack_size",
    "main_stack_size",
    "thread_identity",
    "blocking_threads",
];

/// One validated argument: the builder method to call and its argument.
struct Arg {
    /// The user's spelling of the name, so a builder error points at it.
    name: Ident,
    /// The value, already normalised (`4` becomes `4usize`).
    value: TokenStream,
}

/// The bounds of a stack size, as the runtime checks them (its own limits;
/// `RLIMIT_STACK` can only be checked when the program runs).
const MIN_STACK_SIZE: usize = 16 * 1024;
const MAX_STACK_SIZE: usize = 1 << 30;

/// The validated arguments of `#[coroutines::main(...)]` / `#[coroutines::test(...)]`.
#[derive(Default)]
pub(crate) struct Args {
    given: Vec<Arg>,
}

impl Args {
    /// Parses the attribute's argument tokens. Every problem found is reported,
    /// combined into one `syn::Error`; the arguments that were fine are dropped
    /// in that case.
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<Args> {
        let mut args = Args::default();
        let mut errors = Errors::default();
        for item in split_on_commas(tokens) {
            match parse_arg(&item, &args) {
                Ok(arg) => args.given.push(arg),
                Err(e) => errors.push(e),
            }
        }
        errors.finish()?;
        Ok(args)
    }

    /// `::coroutines::Runtime::builder()` followed by one method call per
    /// argument, in the order the user wrote them.
    pub(crate) fn builder(&self) -> TokenStream {
        let calls = self
            .given
            .iter()
            .map(|Arg { name, value }| quote!(.#name(#value)));
        quote!(::coroutines::Runtime::builder() #(#calls)*)
    }
}

/// Accumulates errors so that all of them are reported at once.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Splits the arguments at top-level commas. Commas inside groups stay put, and
/// a trailing comma is allowed; an empty item (`a = 1,, b = 2`) is kept so that
/// it can be reported.
fn split_on_commas(tokens: TokenStream) -> Vec<Vec<TokenTree>> {
    let mut items = vec![Vec::new()];
    for token in tokens {
        match &token {
            TokenTree::Punct(p) if p.as_char() == ',' => items.push(Vec::new()),
            _ => items.last_mut().expect("never empty").push(token),
        }
    }
    if items.last().is_some_and(Vec::is_empty) {
        items.pop();
    }
    items
}

/// Validates one `name = value` item. `args` holds the items accepted so far,
/// to detect duplicates.
fn parse_arg(item: &[TokenTree], args: &Args) -> syn::Result<Arg> {
    let name = match item.first() {
        Some(TokenTree::Ident(name)) => name.clone(),
        Some(_) => {
            return Err(spanned(
                stream(item),
                "expected an argument of the form `name = value`, e.g. `workers = 4`",
            ))
        }
        // Only reachable for an empty item between two commas.
        None => {
            return Err(syn::Error::new(
                Span::call_site(),
                "expected an argument of the form `name = value` between the commas",
            ))
        }
    };
    let key = name.to_string();
    let Some(example) = example(&key) else {
        return Err(syn::Error::new(
            name.span(),
            format!(
                "unknown argument `{key}`; expected one of: {}",
                KNOWN.map(|k| format!("`{k}`")).join(", ")
            ),
        ));
    };
    if args.given.iter().any(|arg| arg.name == key) {
        return Err(syn::Error::new(
            name.span(),
            format!("duplicate argument `{key}`"),
        ));
    }
    match item.get(1) {
        Some(TokenTree::Punct(eq)) if eq.as_char() == '=' && eq.spacing() == Spacing::Alone => {}
        Some(other) => {
            return Err(syn::Error::new(
                other.span(),
                format!("expected `=` after `{key}`, e.g. `{example}`"),
            ))
        }
        None => {
            return Err(syn::Error::new(
                name.span(),
                format!("`{key}` needs a value, e.g. `{example}`"),
            ))
        }
    }
    let value_tokens = &item[2..];
    if value_tokens.is_empty() {
        return Err(spanned(
            stream(&item[..2]),
            format!("`{key}` needs a value, e.g. `{example}`"),
        ));
    }
    let value: Expr = syn::parse2(stream(value_tokens))?;
    let value = match key.as_str() {
        "workers" => usize_in(&key, example, "be at least 1", 1..=usize::MAX, &value)?,
        "stack_size" | "main_stack_size" => {
            let rule =
                format!("be between {MIN_STACK_SIZE} (16 KiB) and {MAX_STACK_SIZE} (1 GiB) bytes");
            usize_in(
                &key,
                example,
                &rule,
                MIN_STACK_SIZE..=MAX_STACK_SIZE,
                &value,
            )?
        }
        "work_stealing" | "thread_identity" => boolean(&key, &value)?,
        "blocking_threads" => usize_in(&key, example, "be at least 1", 1..=usize::MAX, &value)?,
        _ => unreachable!("`example` knows exactly the names in KNOWN"),
    };
    Ok(Arg { name, value })
}

/// The example shown in error messages, or `None` for an unknown name.
fn example(key: &str) -> Option<&'static str> {
    match key {
        "workers" => Some("workers = 4"),
        "work_stealing" => Some("work_stealing = true"),
        "stack_size" => Some("stack_size = 65536"),
        "main_stack_size" => Some("main_stack_size = 16777216"),
        "thread_identity" => Some("thread_identity = false"),
        "blocking_threads" => Some("blocking_threads = 64"),
        _ => None,
    }
}

/// An integer literal that fits in a `usize` and lies in `range`, re-emitted
/// as a `usize` literal (`4u32` and `0x10` are accepted; only the value
/// matters).
fn usize_in(
    key: &str,
    example: &str,
    rule: &str,
    range: std::ops::RangeInclusive<usize>,
    value: &Expr,
) -> syn::Result<TokenStream> {
    match strip_groups(value) {
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => {
            let n: usize = lit.base10_parse().map_err(|_| {
                syn::Error::new(lit.span(), format!("`{key}` is too large for a `usize`"))
            })?;
            if !range.contains(&n) {
                return Err(syn::Error::new(lit.span(), format!("`{key}` must {rule}")));
            }
            Ok(LitInt::new(&format!("{n}usize"), lit.span()).into_token_stream())
        }
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) if is_int_literal(expr) => Err(spanned(value, format!("`{key}` must {rule}"))),
        _ => Err(spanned(
            value,
            format!("`{key}` expects an integer literal, e.g. `{example}`"),
        )),
    }
}

fn is_int_literal(expr: &Expr) -> bool {
    matches!(
        strip_groups(expr),
        Expr::Lit(ExprLit {
            lit: Lit::Int(_),
            ..
        })
    )
}

/// `true` or `false`.
fn boolean(key: &str, value: &Expr) -> syn::Result<TokenStream> {
    match strip_groups(value) {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(LitBool { value, span }),
            ..
        }) => Ok(LitBool::new(*value, *span).into_token_stream()),
        _ => Err(spanned(value, format!("`{key}` expects `true` or `false`"))),
    }
}

/// Looks through invisible groups, which appear when the attribute is written
/// by a `macro_rules!` macro that substitutes a `$value:literal`.
fn strip_groups(mut expr: &Expr) -> &Expr {
    while let Expr::Group(group) = expr {
        expr = &group.expr;
    }
    expr
}

/// An error covering all of `tokens`.
fn spanned(tokens: impl ToTokens, message: impl std::fmt::Display) -> syn::Error {
    syn::Error::new_spanned(tokens.into_token_stream(), message)
}

/// Collects a slice of token trees, for `spanned`.
fn stream(tokens: &[TokenTree]) -> TokenStream {
    tokens.iter().cloned().collect()
}
