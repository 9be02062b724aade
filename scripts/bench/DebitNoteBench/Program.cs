using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Sandbox;

// What debit notes cost, side by side in one run on this machine:
//  1. per note (one slice paid): bytes on the wire, signatures, and CPU of each step (the provider signs the note and
//     records the slice as owed; the requester checks it, signs the payment, reserves and settles it; the provider
//     checks and records the payment), against the same steps of the one receipt a lease pays once;
//  2. the sandbox: modules that spin until their fuel runs out (one calling a function each round, one making no call),
//     run plain and sliced (a note per slice, paid at once), interleaved, CPU per fuel and time per run.
// Before/after another commit in one run: scripts/bench/DebitNoteBench/ab.sh.
// usage: dotnet run --project scripts/bench/DebitNoteBench -c Release -- [notes, default 1000] [fuel log2, default 31] [slice log2, default 24] [rounds, default 3]
var notes = Arg(0, 1000);
var fuelLog = Arg(1, 31);
var sliceLog = Arg(2, 24);
var rounds = Arg(3, 3);
var requester = PrivateKey.FromRandom(new Random(1));
var provider = PrivateKey.FromRandom(new Random(2));
var credits = new CreditsOptions { AllowOverdraft = true };
var root = Path.Combine(Path.GetTempPath(), "potluck-debitbench-" + Guid.NewGuid().ToString("N"));
const long Slice = 1L << 30;
const ulong Price = 10;
try
{
    Console.WriteLine($"debit notes, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, load {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
    using var payer = CreditLedger.Open(Path.Combine(root, "requester"), requester.PeerId, credits, TimeProvider.System);
    using var payee = CreditLedger.Open(Path.Combine(root, "provider"), provider.PeerId, credits, TimeProvider.System);
    var terms = new LeaseTerms { FuelLimit = long.MaxValue, PricePerMegaFuel = (long)Price, DebitNoteFuel = Slice };

    // ---- 1. one note per lease, `notes` leases (each note a slice of its own lease: every step is the first of its kind)
    var cpuNotes = Process.GetCurrentProcess().TotalProcessorTime;
    var t = new double[7];
    long noteBytes = 0, noteFrame = 0, paymentBytes = 0, paymentFrame = 0;
    var options = new LeaseOptions();
    for (var i = 0; i < notes; i++)
    {
        var lease = BitConverter.GetBytes((ulong)i + 1);
        Array.Reverse(lease);
        var step = Stopwatch.StartNew();
        Receipt.TryComputeAmount((ulong)Slice, Price, out var amount);
        var note = SignedDebitNote.Create(new DebitNote
        {
            LeaseId = lease, Requester = requester.PeerId.ToBytes(), Provider = provider.PeerId.ToBytes(), SliceIndex = 0,
            CumulativeFuel = (ulong)Slice, PricePerMillionFuel = Price, CumulativeAmount = amount, PaidBefore = 0,
            TimestampUnixMs = 1_700_000_000_000 + i,
        }, provider);
        t[0] += Lap(step);
        var slice = DebitNoteSlicing.SliceLeaseId(lease, 0);
        payee.RecordOwed(slice, requester.PeerId, note.Note.Due);
        t[1] += Lap(step);
        var frame = LeaseCodec.EncodeFrame(new LeaseDebitNote { RequestId = (ulong)i + 1, Note = note.EnvelopeBytes });
        noteBytes += note.EnvelopeBytes.Length;
        noteFrame += frame.Length;
        step.Restart();
        var decoded = SignedDebitNote.Decode(note.EnvelopeBytes, credits);
        var book = new DebitNoteBook(terms, lease, requester.PeerId, provider.PeerId, 4096);
        if (!decoded.IsValid || book.Check(decoded.Value!) != DebitNoteVerdict.Valid) throw new InvalidOperationException("note refused");
        t[2] += Lap(step);
        var payment = SignedReceipt.Create(decoded.Value!.Payment(DateTimeOffset.UtcNow), requester);
        t[3] += Lap(step);
        payer.ReservePayment(slice, provider.PeerId, payment.Receipt.Amount);
        if (payer.Settle(payment) != LedgerResult.Recorded) throw new InvalidOperationException("not settled");
        t[4] += Lap(step);
        paymentBytes += payment.EnvelopeBytes.Length;
        paymentFrame += LeaseCodec.EncodeFrame(new LeaseReceipt { RequestId = (ulong)i + 1, Envelope = payment.EnvelopeBytes }).Length;
        step.Restart();
        var received = SignedReceipt.Decode(payment.EnvelopeBytes, credits);
        if (!received.IsValid || received.Value!.Check(note.Expectation()) != VerifyStatus.Valid) throw new InvalidOperationException("payment refused");
        t[5] += Lap(step);
        if (payee.RecordEarned(received.Value!) != LedgerResult.Recorded) throw new InvalidOperationException("not recorded");
        payer.MarkDelivered(slice);
        t[6] += Lap(step);
    }

    cpuNotes = Process.GetCurrentProcess().TotalProcessorTime - cpuNotes;
    // The receipt a lease pays once, the same steps (attestation signing is the lease's own, not counted).
    var cpuReceipts = Process.GetCurrentProcess().TotalProcessorTime;
    var r = new double[5];
    long receiptBytes = 0;
    for (var i = 0; i < notes; i++)
    {
        var lease = BitConverter.GetBytes((ulong)i + 1_000_000_000);
        var attestation = SignedAttestation.Create(new Attestation
        {
            LeaseId = lease, Requester = requester.PeerId.ToBytes(), Provider = provider.PeerId.ToBytes(),
            ModuleHash = SHA256.HashData(lease), InputHash = SHA256.HashData(lease), OutputHash = SHA256.HashData(lease), OutputSize = 0,
            FuelUsed = (ulong)Slice, Outcome = AttestedOutcome.Exited, TimestampUnixMs = 1_700_000_000_000 + i,
        }, provider);
        var step = Stopwatch.StartNew();
        Receipt.TryComputeAmount((ulong)Slice, Price, out var amount);
        payee.RecordOwed(lease, requester.PeerId, amount);
        r[0] += Lap(step);
        var receipt = SignedReceipt.Create(Receipt.For(attestation, Price, DateTimeOffset.UtcNow), requester);
        r[1] += Lap(step);
        payer.ReservePayment(lease, provider.PeerId, amount);
        payer.Settle(receipt);
        r[2] += Lap(step);
        receiptBytes += receipt.EnvelopeBytes.Length;
        var received = SignedReceipt.Decode(receipt.EnvelopeBytes, credits);
        if (!received.IsValid || received.Value!.Check(ReceiptExpectation.For(attestation, Price)) != VerifyStatus.Valid) throw new InvalidOperationException();
        r[3] += Lap(step);
        payee.RecordEarned(received.Value!);
        payer.MarkDelivered(lease);
        r[4] += Lap(step);
    }
    cpuReceipts = Process.GetCurrentProcess().TotalProcessorTime - cpuReceipts;
    string Us(double total) => (total / notes * 1e6).ToString("0", CultureInfo.InvariantCulture);
    Console.WriteLine($"| per note ({notes} notes; wall µs per step, one at a time) | debit note | the lease's one receipt |");
    Console.WriteLine("| --- | ---: | ---: |");
    Console.WriteLine($"| bytes: note envelope (frame) + payment envelope (frame) | {noteBytes / notes} ({noteFrame / notes}) + {paymentBytes / notes} ({paymentFrame / notes}) | receipt {receiptBytes / notes} |");
    Console.WriteLine($"| signatures made / checked | 2 / 2 | 1 / 1 |");
    Console.WriteLine($"| provider: sign the note | {Us(t[0])} | — |");
    Console.WriteLine($"| provider: record owed | {Us(t[1])} | {Us(r[0])} |");
    Console.WriteLine($"| requester: decode and check the note | {Us(t[2])} | — |");
    Console.WriteLine($"| requester: sign the payment | {Us(t[3])} | {Us(r[1])} |");
    Console.WriteLine($"| requester: reserve and settle (durable) | {Us(t[4])} | {Us(r[2])} |");
    Console.WriteLine($"| provider: decode and check the payment | {Us(t[5])} | {Us(r[3])} |");
    Console.WriteLine($"| provider: record earned (durable), requester: delivered | {Us(t[6])} | {Us(r[4])} |");
    Console.WriteLine($"| total, wall µs | {Us(t.Sum())} | {Us(r.Sum())} |");
    Console.WriteLine($"| total, CPU µs of the process | {Us(cpuNotes.TotalSeconds)} | {Us(cpuReceipts.TotalSeconds)} |");

    // ---- 2. the sandbox, plain vs sliced, interleaved, for a loop that calls a function each round and one that makes no
    // call (Wasmtime saves its fuel count only at the sandbox's fences then: FuelFence); CPU per fuel, and the notes asked.
    var modules = new (string Name, byte[] Wasm)[]
    {
        ("calling", Wasmtime.Module.ConvertText("(module (memory (export \"memory\") 1) (func $f) (func (export \"_start\") (loop $l (call $f) (br $l))))")),
        ("call-free", Wasmtime.Module.ConvertText("(module (memory (export \"memory\") 1) (func (export \"_start\") (loop $l (br $l))))")),
    };
    using var sandbox = new WasmSandbox(new SandboxOptions { DefaultFuel = ulong.MaxValue / 2 }, NullLogger<WasmSandbox>.Instance);
    Console.WriteLine($"| sandbox, 2^{fuelLog} fuel, slice 2^{sliceLog}, tick {sandbox.Options.EpochTick.TotalMilliseconds} ms (round) | plain: CPU ns/fuel, CPU ms (wall ms) | sliced: CPU ns/fuel, CPU ms (wall ms), notes |");
    Console.WriteLine("| --- | ---: | ---: |");
    foreach (var (_, wasm) in modules)
    {
        sandbox.Execute(new TaskSpec { Module = wasm, FuelLimit = 1UL << 20 }, default); // compile and warm
    }
    for (var round = 1; round <= rounds; round++)
    {
        foreach (var (name, wasm) in modules)
        {
            var plain = new TaskSpec { Module = wasm, FuelLimit = 1UL << fuelLog };
            var asked = 0;
            var sliced = plain with { DebitNoteFuel = 1UL << sliceLog, DebitNoteDue = _ => { asked++; return true; } };
            var (pc, pw, pf) = Run(sandbox, plain);
            var (sc, sw, sf) = Run(sandbox, sliced);
            Console.WriteLine($"| {name} ({round}) | {pc * 1e6 / pf:0.000}, {pc:0} ({pw:0}) | {sc * 1e6 / sf:0.000}, {sc:0} ({sw:0}), {asked} |");
            if (sf != pf) throw new InvalidOperationException("sliced run used other fuel");
        }
    }
}
finally
{
    try
    {
        Directory.Delete(root, recursive: true);
    }
    catch (IOException)
    {
    }
}

static (double CpuMs, double WallMs, ulong Fuel) Run(WasmSandbox sandbox, TaskSpec spec)
{
    var cpu = Process.GetCurrentProcess().TotalProcessorTime;
    var wall = Stopwatch.StartNew();
    var result = sandbox.Execute(spec, default);
    return ((Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalMilliseconds, wall.Elapsed.TotalMilliseconds, result.FuelConsumed);
}

static double Lap(Stopwatch step)
{
    var s = step.Elapsed.TotalSeconds;
    step.Restart();
    return s;
}

int Arg(int i, int fallback) => args.Length > i && int.TryParse(args[i], CultureInfo.InvariantCulture, out var v) ? v : fallback;
