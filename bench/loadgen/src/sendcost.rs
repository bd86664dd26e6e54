//! The kernel's cost of one small write to a loopback TCP socket, by system call: `writev` of
//! a header and a payload (how the hub wrote a single frame until 2026-12-06) against `send`
//! of the same bytes copied into one buffer (how it writes one now).
//!
//! A sender thread pinned to one CPU writes a 130-byte frame to each of N sockets, rounds
//! apart like a fan-out; a reader thread on another CPU drains them. The sender's system
//! time (`getrusage(RUSAGE_THREAD)`) per write is the figure, the clients' receive path
//! included, as loopback bills it to the sender.

use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};

#[derive(Args)]
pub struct SendCostArgs {
    /// How to write each frame.
    #[arg(long, value_enum)]
    call: Call,
    /// Sockets written per round.
    #[arg(long, default_value_t = 250)]
    sockets: usize,
    /// Rounds (one write per socket each).
    #[arg(long, default_value_t = 4000)]
    rounds: usize,
    /// Pause between rounds, in microseconds (the clients catch up, as in a fan-out).
    #[arg(long, default_value_t = 2000)]
    pause_us: u64,
    /// CPU of the sender thread.
    #[arg(long, default_value_t = 0)]
    sender_cpu: usize,
    /// CPU of the reader thread.
    #[arg(long, default_value_t = 1)]
    reader_cpu: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum Call {
    /// `writev` of the 2-byte header and the 128-byte payload.
    Writev,
    /// `send` of the 130 bytes in one buffer.
    Send,
}

const HEADER: [u8; 2] = [0x81, 0x7e];
const PAYLOAD: [u8; 128] = [b'x'; 128];

pub fn run(args: SendCostArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut clients = Vec::with_capacity(args.sockets);
    let mut servers = Vec::with_capacity(args.sockets);
    for _ in 0..args.sockets {
        clients.push(TcpStream::connect(addr)?);
        let (server, _) = listener.accept()?;
        server.set_nodelay(true)?;
        servers.push(server);
    }
    let expected = args.sockets * args.rounds * (HEADER.len() + PAYLOAD.len());
    let reader_cpu = args.reader_cpu;
    let reader = std::thread::spawn(move || read_all(clients, expected, reader_cpu));

    pin(args.sender_cpu)?;
    let whole = [&HEADER[..], &PAYLOAD[..]].concat();
    let slices = [IoSlice::new(&HEADER), IoSlice::new(&PAYLOAD)];
    let before = thread_times()?;
    for _ in 0..args.rounds {
        for mut socket in &servers {
            let n = match args.call {
                Call::Writev => socket.write_vectored(&slices)?,
                Call::Send => socket.write(&whole)?,
            };
            if n != whole.len() {
                bail!("a short write ({n} bytes): the reader fell behind");
            }
        }
        std::thread::sleep(Duration::from_micros(args.pause_us));
    }
    let after = thread_times()?;
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader panicked"))??;
    let writes = (args.sockets * args.rounds) as f64;
    println!(
        "{} system {:.3} us per write, user {:.3} us ({} sockets x {} rounds)",
        match args.call {
            Call::Writev => "writev",
            Call::Send => "send",
        },
        (after.0 - before.0) / writes,
        (after.1 - before.1) / writes,
        args.sockets,
        args.rounds
    );
    Ok(())
}

/// Reads every socket until `expected` bytes came in altogether.
fn read_all(clients: Vec<TcpStream>, expected: usize, cpu: usize) -> anyhow::Result<()> {
    pin(cpu)?;
    for c in &clients {
        c.set_nonblocking(true)?;
    }
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while got < expected {
        let mut idle = true;
        for mut c in &clients {
            match c.read(&mut buf) {
                Ok(0) => bail!("a socket closed early"),
                Ok(n) => {
                    got += n;
                    idle = false;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        if idle {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(())
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity(0, ..)
    // only touch it and the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).context(format!("pinning to CPU {cpu}"));
        }
    }
    Ok(())
}

/// The calling thread's (system, user) CPU time, in microseconds.
fn thread_times() -> anyhow::Result<(f64, f64)> {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_THREAD, &mut usage) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        usage
    };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    Ok((us(usage.ru_stime), us(usage.ru_utime)))
}
