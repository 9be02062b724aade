using Potluck.Protocol.Runtime;
using Potluck.Protocol.Tests.Host;

namespace Potluck.Protocol.Tests.Identify;

/// <summary>
/// What identify keeps per connected peer (stop 37): the peer's result itself once identified (not a completed source
/// and its task), a source only while someone waits; gone when the peer leaves, with the same answers as before.
/// </summary>
public class IdentifyHeldTests
{
    [Test]
    public void AnIdentifiedPeer_IsHeldAsItsResult_AWaiterAsASource_AndBothLeaveWithThePeer() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d, seed: 38);
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        var c = await hosts.StartAsync();

        var waiting = a.Identify.WhenIdentifiedAsync(c.Host.PeerId, ct); // asked before c connects
        Assert.That(waiting.IsCompleted, Is.False);
        Assert.That(a.Identify.Held, Is.EqualTo((0, 1)));

        await a.Host.ConnectAsync(b.Address, ct);
        var fromB = await a.Identify.WhenIdentifiedAsync(b.Host.PeerId, ct);
        Assert.That(a.Identify.Held, Is.EqualTo((1, 1)), "b held as its result (main: a completed source), c still waited on");
        var again = a.Identify.WhenIdentifiedAsync(b.Host.PeerId, ct);
        Assert.That(again.IsCompletedSuccessfully, Is.True, "an identified peer answers at once");
        Assert.That(again.Result, Is.SameAs(fromB), "with the same result");

        await a.Host.ConnectAsync(c.Address, ct);
        var fromC = await waiting;
        Assert.That(fromC.Peer, Is.EqualTo(c.Host.PeerId));
        Assert.That(fromC.Protocols, Is.EquivalentTo(c.Host.Protocols));
        Assert.That(a.Identify.Held, Is.EqualTo((2, 0)), "the waiter's source gave way to the result");

        await a.Host.DisconnectAsync(b.Host.PeerId);
        await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
        Assert.That(a.Identify.Held, Is.EqualTo((1, 0)), "b left: nothing kept of it");
        var afterLeaving = a.Identify.WhenIdentifiedAsync(b.Host.PeerId, ct);
        Assert.That(afterLeaving.IsCompleted, Is.False, "a peer that left is waited for again, as before");
        Assert.That(a.Identify.Held, Is.EqualTo((1, 1)));
        await a.Host.ConnectAsync(b.Address, ct);
        Assert.That((await afterLeaving).Peer, Is.EqualTo(b.Host.PeerId));
        Assert.That(a.Identify.Held, Is.EqualTo((2, 0)));
    });
}
