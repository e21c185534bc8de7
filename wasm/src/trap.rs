//! What happens if the module ever panics. On wasm32-unknown-unknown a panic aborts: the
//! instance traps, and a future that was being polled never settles, so a caller awaiting it
//! would hang. The hook below tells the JavaScript side first (`onTrap`), which rejects every
//! pending call with the panic's message and starts a fresh instance for the next one
//! (wasm/js/index.js).

use std::cell::RefCell;

use js_sys::Function;
use wasm_bindgen::prelude::*;

thread_local! {
    static ON_TRAP: RefCell<Option<Function>> = const { RefCell::new(None) };
}

/// Installs the panic hook, reporting to `callback(message)`.
#[wasm_bindgen(js_name = onTrap)]
pub fn on_trap(callback: Function) {
    ON_TRAP.with(|slot| *slot.borrow_mut() = Some(callback));
    std::panic::set_hook(Box::new(|info| {
        let message = info.to_string();
        // try_with/try_borrow: a panic inside the hook's own machinery must not recurse.
        let _ = ON_TRAP.try_with(|slot| {
            if let Ok(slot) = slot.try_borrow() {
                if let Some(f) = slot.as_ref() {
                    let _ = f.call1(&JsValue::NULL, &JsValue::from_str(&message));
                }
            }
        });
    }));
}

/// Panics on purpose — at once, or inside a future after yielding once — so that the tests
/// can prove a trap rejects pending calls and the next call gets a fresh instance.
#[wasm_bindgen(js_name = __panicForTests)]
pub fn panic_for_tests(in_future: bool) -> js_sys::Promise {
    if !in_future {
        panic!("deliberate panic from __panicForTests");
    }
    wasm_bindgen_futures::future_to_promise(async {
        let _ =
            wasm_bindgen_futures::JsFuture::from(js_sys::Promise::resolve(&JsValue::NULL)).await;
        panic!("deliberate panic inside a future from __panicForTests");
    })
}
