//! The iceoryx2 transport of `colo bench queue|topic`, as a C ABI that
//! colo-bench loads with dlopen (tools/bench/transport_iceoryx2.cpp). One
//! publish-subscribe service of byte slices per cell, zero copy both ways:
//! the sender loans a sample and writes the message in place, the receiver
//! reads it in place and releases it.
//!
//! Settings: the subscriber's buffer holds `depth` samples, overflow is off
//! and the publisher's backpressure is "retry until delivered", so that a
//! full subscriber holds the publisher back as colo's blocking topics do
//! and no message is lost. iceoryx2 wakes no sleeper here: receivers poll.
//!
//! Errors are returned as a status (null pointer or negative number); the
//! text of the last one is in `colo_ix2_last_error`.

use core::ffi::{c_char, c_void, CStr};
use core::mem::MaybeUninit;
use std::cell::RefCell;
use std::ffi::CString;

use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use iceoryx2::sample::Sample;
use iceoryx2::sample_mut_uninit::SampleMutUninit;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn fail<T>(what: &str, error: impl core::fmt::Debug) -> Option<T> {
    let text = CString::new(format!("{what}: {error:?}")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
    None
}

// A Result's error recorded as the last error; the value as an Option.
trait OrFail<T> {
    fn or_fail(self, what: &str) -> Option<T>;
}
impl<T, E: core::fmt::Debug> OrFail<T> for Result<T, E> {
    fn or_fail(self, what: &str) -> Option<T> {
        self.map_or_else(|e| fail(what, e), Some)
    }
}

/// The text of the last error of this thread ("" if none).
#[no_mangle]
pub extern "C" fn colo_ix2_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

type Service = ipc::Service;

struct Port<P> {
    // Dropped in declaration order: the port before its service and node.
    port: P,
    _service: iceoryx2::service::port_factory::publish_subscribe::PortFactory<Service, [u8], ()>,
    _node: Node<Service>,
}

fn open_service(
    name: *const c_char,
    depth: usize,
) -> Option<(Node<Service>, iceoryx2::service::port_factory::publish_subscribe::PortFactory<Service, [u8], ()>)> {
    set_log_level(LogLevel::Error);
    if name.is_null() {
        return fail("service name", "null");
    }
    let name = unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned();
    let node = NodeBuilder::new().create::<Service>().or_fail("node")?;
    let service_name: ServiceName = name.as_str().try_into().or_fail("service name")?;
    let service = node
        .service_builder(&service_name)
        .publish_subscribe::<[u8]>()
        .subscriber_max_buffer_size(depth)
        .enable_safe_overflow(false)
        .history_size(0)
        .max_publishers(1)
        .max_subscribers(1)
        .open_or_create()
        .or_fail("service")?;
    Some((node, service))
}

struct Sending {
    port: Port<Publisher<Service, [u8], ()>>,
    loan: Option<SampleMutUninit<Service, [MaybeUninit<u8>], ()>>,
}

/// Opens the publisher of service `name` for messages of up to `max_size`
/// bytes; null on failure.
#[no_mangle]
pub extern "C" fn colo_ix2_publisher_open(name: *const c_char, max_size: usize, depth: usize) -> *mut c_void {
    let make = || -> Option<Box<Sending>> {
        let (node, service) = open_service(name, depth)?;
        let publisher = service
            .publisher_builder()
            .initial_max_slice_len(max_size)
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .or_fail("publisher")?;
        Some(Box::new(Sending { port: Port { port: publisher, _service: service, _node: node }, loan: None }))
    };
    make().map_or(core::ptr::null_mut(), |b| Box::into_raw(b).cast())
}

/// Loans `size` writable bytes (the previous loan, if any, is abandoned);
/// null if no sample is free now or on failure (then the error is set).
#[no_mangle]
pub extern "C" fn colo_ix2_loan(sender: *mut c_void, size: usize) -> *mut u8 {
    let s = unsafe { &mut *(sender as *mut Sending) };
    s.loan = None;
    match s.port.port.loan_slice_uninit(size) {
        Ok(mut sample) => {
            let data = sample.payload_mut().as_mut_ptr().cast::<u8>();
            s.loan = Some(sample);
            data
        }
        Err(e) => {
            let _: Option<()> = fail("loan", e);
            core::ptr::null_mut()
        }
    }
}

/// Sends the loaned sample (its bytes written by the caller): 0, or -1.
#[no_mangle]
pub extern "C" fn colo_ix2_send(sender: *mut c_void) -> i32 {
    let s = unsafe { &mut *(sender as *mut Sending) };
    let Some(sample) = s.loan.take() else {
        return -1;
    };
    // The caller wrote every byte of the loan before calling send.
    let sample = unsafe { sample.assume_init() };
    match sample.send() {
        Ok(_) => 0,
        Err(e) => {
            let _: Option<()> = fail("send", e);
            -1
        }
    }
}

#[no_mangle]
pub extern "C" fn colo_ix2_publisher_close(sender: *mut c_void) {
    if !sender.is_null() {
        drop(unsafe { Box::from_raw(sender as *mut Sending) });
    }
}

struct Receiving {
    port: Port<Subscriber<Service, [u8], ()>>,
    held: Option<Sample<Service, [u8], ()>>,
}

/// Opens the subscriber of service `name`; null on failure.
#[no_mangle]
pub extern "C" fn colo_ix2_subscriber_open(name: *const c_char, depth: usize) -> *mut c_void {
    let make = || -> Option<Box<Receiving>> {
        let (node, service) = open_service(name, depth)?;
        let subscriber = service.subscriber_builder().buffer_size(depth).create().or_fail("subscriber")?;
        Some(Box::new(Receiving { port: Port { port: subscriber, _service: service, _node: node }, held: None }))
    };
    make().map_or(core::ptr::null_mut(), |b| Box::into_raw(b).cast())
}

/// Takes the next message, held until colo_ix2_release: 1 and its bytes in
/// `data`/`size`, 0 if none, -1 on failure.
#[no_mangle]
pub extern "C" fn colo_ix2_receive(receiver: *mut c_void, data: *mut *const u8, size: *mut usize) -> i32 {
    let r = unsafe { &mut *(receiver as *mut Receiving) };
    r.held = None;
    match r.port.port.receive() {
        Ok(Some(sample)) => {
            let payload = sample.payload();
            unsafe {
                *data = payload.as_ptr();
                *size = payload.len();
            }
            r.held = Some(sample);
            1
        }
        Ok(None) => 0,
        Err(e) => {
            let _: Option<()> = fail("receive", e);
            -1
        }
    }
}

/// Releases the message taken by the last colo_ix2_receive.
#[no_mangle]
pub extern "C" fn colo_ix2_release(receiver: *mut c_void) {
    let r = unsafe { &mut *(receiver as *mut Receiving) };
    r.held = None;
}

#[no_mangle]
pub extern "C" fn colo_ix2_subscriber_close(receiver: *mut c_void) {
    if !receiver.is_null() {
        drop(unsafe { Box::from_raw(receiver as *mut Receiving) });
    }
}
