using System.Buffers;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport;
using Potluck.Protocol.Transport.Memory;

namespace Potluck.Protocol.Tests.Transport;

/// <summary>A parked read on a simulated connection is the reader itself (no async method per read): what it ends with.</summary>
public class MemoryPipeReaderTests
{
    private static readonly TimeSpan HangGuard = TimeSpan.FromSeconds(30);

    private static async Task<(IRawConnection Dialer, IRawConnection Listener)> ConnectAsync()
    {
        var network = new SimulatedNetwork(new VirtualClock());
        var listener = await network.CreateTransport().ListenAsync(Multiaddr.Parse("/memory/0"), CancellationToken.None);
        var dialer = await network.CreateTransport().DialAsync(listener.Address, CancellationToken.None);
        var accepted = await listener.AcceptAsync(CancellationToken.None).AsTask().WaitAsync(HangGuard);
        return (dialer, accepted);
    }

    [Test]
    public async Task AParkedRead_IsTheBuffersOwn_TheReaderHoldsNoDelegateNorPendingTask()
    {
        var (dialer, listener) = await ConnectAsync();
        var read = listener.Input.ReadAsync();
        Assert.That(read.IsCompleted, Is.False);
        // The caller's continuation is parked on the buffer underneath: the reader itself holds only the buffer and flags.
        var held = Potluck.Protocol.Tests.Yamux.YamuxConnectionTests.HeldFields(listener.Input).ToList();
        Assert.That(held.OfType<Delegate>(), Is.Empty);
        Assert.That(held.Select(h => h.GetType().Name), Is.EquivalentTo(new[] { "MemoryBuffer" }));

        await dialer.Output.WriteAsync(new byte[] { 7, 8 });
        var result = await read.AsTask().WaitAsync(HangGuard);
        Assert.That(result.Buffer.ToArray(), Is.EqualTo(new byte[] { 7, 8 }));
        listener.Input.AdvanceTo(result.Buffer.End);
        Assert.That(Potluck.Protocol.Tests.Yamux.YamuxConnectionTests.HeldFields(listener.Input).Select(h => h.GetType().Name), Is.EquivalentTo(new[] { "MemoryBuffer" }));
    }

    [Test]
    public async Task ParkedRead_GetsTheBytes_AndItsResultIsTakenOnce()
    {
        var (dialer, listener) = await ConnectAsync();
        var read = listener.Input.ReadAsync();
        Assert.That(read.IsCompleted, Is.False);

        await dialer.Output.WriteAsync(new byte[] { 1, 2, 3 });
        var result = await read.AsTask().WaitAsync(HangGuard);
        Assert.That(result.Buffer.ToArray(), Is.EqualTo(new byte[] { 1, 2, 3 }));
        Assert.That(result.IsCompleted, Is.False);
        listener.Input.AdvanceTo(result.Buffer.End);

        // A second parked read works the same way (the reader is reused, with a new version).
        var again = listener.Input.ReadAsync();
        Assert.That(again.IsCompleted, Is.False);
        await dialer.Output.WriteAsync(new byte[] { 4 });
        var second = await again;
        Assert.That(second.Buffer.ToArray(), Is.EqualTo(new byte[] { 4 }));
        listener.Input.AdvanceTo(second.Buffer.End);
        Assert.Throws<InvalidOperationException>(() => _ = again.Result, "a parked read's result is taken once");
    }

    /// <summary>The remote goes away in the middle of a frame: the parked read ends with the half frame and the end, never hangs.</summary>
    [Test]
    public async Task ConnectionClosedMidFrame_WakesTheParkedRead_WithWhatArrivedAndTheEnd()
    {
        var (dialer, listener) = await ConnectAsync();
        await dialer.Output.WriteAsync(new byte[] { 0, 0, 0, 9, 1 }); // a header announcing 9 bytes, and one of them
        var first = await listener.Input.ReadAsync().AsTask().WaitAsync(HangGuard);
        listener.Input.AdvanceTo(first.Buffer.Start, first.Buffer.End); // not a whole frame: wait for more
        var parked = listener.Input.ReadAsync();
        Assert.That(parked.IsCompleted, Is.False);

        await dialer.DisposeAsync();
        var end = await parked.AsTask().WaitAsync(HangGuard);
        Assert.That(end.IsCompleted, Is.True);
        Assert.That(end.Buffer.ToArray(), Is.EqualTo(new byte[] { 0, 0, 0, 9, 1 }));
        listener.Input.AdvanceTo(end.Buffer.End);
        await listener.DisposeAsync();
    }
}
