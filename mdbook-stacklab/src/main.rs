//! `mdbook-stacklab`: mdBook runs it as `mdbook-stacklab supports <renderer>`
//! (yes for HTML only), then with `[context, book]` as JSON on stdin,
//! expecting the book back on stdout. See the library for what it does.

use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [cmd, renderer] = args.as_slice() {
        if cmd == "supports" {
            return if renderer == "html" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    }
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("mdbook-stacklab: cannot read the book from stdin: {e}");
        return ExitCode::FAILURE;
    }
    match mdbook_stacklab::run(&input) {
        Ok(book) => {
            println!("{book}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mdbook-stacklab: {e}");
            ExitCode::FAILURE
        }
    }
}
