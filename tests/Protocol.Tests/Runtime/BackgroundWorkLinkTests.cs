using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Tests.Host;
using Potluck.Tests;

namespace Potluck.Protocol.Tests.Runtime;

/// <summary>
/// <see cref="BackgroundWork.Link"/>: a short-lived operation's token source that the owner's stop token keeps no callback
/// node for. .NET keeps a token source's unregistered callback nodes for reuse until the source dies, so a node-lifetime
/// token that N operations registered on at once held N nodes (80 B each) for the node's life; linked this way it holds none.
/// </summary>
public class BackgroundWorkLinkTests
{
    private const int Operations = 1000;

    [Test]
    public void AThousandOperationsAtOnce_LeaveTheOwnersStopToken_NoCallbackNode_WhereLinkedSourcesLeaveAThousand()
    {
        var family = new BackgroundWork.Family();
        var owner = new BackgroundWork("owner", NullLogger.Instance, family: family);
        var router = new BackgroundWork("router", NullLogger.Instance, family: family);
        var timeouts = Enumerable.Range(0, Operations).Select(_ => new CancellationTokenSource()).ToList();

        // The control: what CreateLinkedTokenSource leaves on a node-lifetime token (the counter sees it).
        var control = new CancellationTokenSource();
        var linkedAtOnce = timeouts.Select(t => CancellationTokenSource.CreateLinkedTokenSource(t.Token, control.Token)).ToList();
        linkedAtOnce.ForEach(l => l.Dispose());
        Assert.That(Registrations.Live(control.Token), Is.Zero);
        Assert.That(Registrations.Nodes(control.Token), Is.EqualTo(Operations), "the runtime keeps a free node per registration at the peak");

        // Each operation also names another owner's stop token (a handler's router): neither keeps a node.
        var operations = timeouts.Select(t => owner.Link(t.Token, router.Stopping)).ToList();
        Assert.That(owner.Linked, Is.EqualTo(Operations));
        Assert.That(router.Linked, Is.EqualTo(Operations));
        Assert.That(Registrations.Nodes(owner.Stopping) + Registrations.Nodes(router.Stopping), Is.Zero, "no registration on either stop token");
        Assert.That(timeouts.Sum(t => Registrations.Live(t.Token)), Is.EqualTo(Operations), "one registration on each operation's own token");
        operations.ForEach(o => o.Dispose());
        Assert.That(owner.Linked + router.Linked, Is.Zero, "a disposed operation leaves both lists");
        Assert.That(timeouts.Sum(t => Registrations.Live(t.Token)), Is.Zero);
        Assert.That(Registrations.Nodes(owner.Stopping) + Registrations.Nodes(router.Stopping), Is.Zero);
    }

    [Test]
    public void ALinkedOperation_IsCancelledByEitherToken_ByItsOwnersStop_AndByAnotherOwnersStop_AfterTheStopTokenItself()
    {
        VirtualTimeDriver.Run(async d =>
        {
            var family = new BackgroundWork.Family();
            var owner = new BackgroundWork("owner", NullLogger.Instance, d.Loop.TaskScheduler, family);
            var router = new BackgroundWork("router", NullLogger.Instance, d.Loop.TaskScheduler, family);
            var stranger = new BackgroundWork("other node", NullLogger.Instance, d.Loop.TaskScheduler); // not of this family
            using var first = new CancellationTokenSource();
            using var second = new CancellationTokenSource();

            using (var byFirst = owner.Link(first.Token, second.Token))
            {
                Assert.That(byFirst.IsCancellationRequested, Is.False);
                first.Cancel();
                Assert.That(byFirst.IsCancellationRequested, Is.True, "the first token");
            }
            using (var bySecond = owner.Link(CancellationToken.None, second.Token))
            {
                second.Cancel();
                Assert.That(bySecond.IsCancellationRequested, Is.True, "the second token");
            }
            using (var byStranger = owner.Link(stranger.Stopping))
            {
                Assert.That(Registrations.Live(stranger.Stopping), Is.EqualTo(1), "a token of no owner of the family is registered on");
                await stranger.StopAsync();
                Assert.That(byStranger.IsCancellationRequested, Is.True, "a token outside the family");
            }
            Assert.That(Registrations.Live(stranger.Stopping), Is.Zero);

            var ownerSawStopping = false;
            var byRouter = owner.Link(router.Stopping);
            var byOwner = owner.Link(default);
            using var seen = byOwner.Token.Register(() => ownerSawStopping = owner.Stopping.IsCancellationRequested && owner.IsStopping);
            await router.StopAsync();
            Assert.That(byRouter.IsCancellationRequested, Is.True, "another owner's stop cancels what named its token");
            Assert.That(byOwner.IsCancellationRequested, Is.False, "and nothing else");
            Assert.That(router.Linked, Is.Zero);
            Assert.That(owner.Linked, Is.EqualTo(2), "both still run under their owner until disposed");
            byRouter.Dispose();
            Assert.That(owner.Linked, Is.EqualTo(1));

            await owner.StopAsync();
            Assert.That(byOwner.IsCancellationRequested, Is.True, "the owner's stop");
            Assert.That(ownerSawStopping, Is.True, "cancelled after the owner's token: whoever it wakes sees the owner stopping");
            Assert.That(owner.Linked, Is.Zero);
            byOwner.Dispose(); // after the stop took it off the list: nothing to remove, no throw

            using var late = owner.Link(default);
            Assert.That(late.IsCancellationRequested, Is.True, "linked after the stop: cancelled at once, as a linked source of a cancelled token");
            Assert.That(owner.Linked, Is.Zero);

            // A disposed owner leaves the family: another one still links (a stopped DHT beside a running identify).
            var survivor = new BackgroundWork("identify", NullLogger.Instance, d.Loop.TaskScheduler, family);
            await router.DisposeAsync();
            await owner.DisposeAsync();
            using (var afterDisposal = survivor.Link(first.Token, CancellationToken.None))
            {
                Assert.That(afterDisposal.IsCancellationRequested, Is.True, "first was cancelled above");
            }
            using var running = survivor.Link(new CancellationTokenSource().Token);
            Assert.That(running.IsCancellationRequested, Is.False);
            Assert.That(survivor.Linked, Is.EqualTo(1));
        });
    }

    [Test]
    public void TwentyDialsAtOnce_AfterTenAtOnce_AddNoCallbackNode_OnTheHostsStopTokens()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var a = await hosts.StartAsync();
            var others = new List<TestHosts.TestNode>();
            for (var i = 0; i < 30; i++)
            {
                others.Add(await hosts.StartAsync());
            }
            int Nodes(TestHosts.TestNode n) => Registrations.Nodes(n.Host.StopTokens.Host) + Registrations.Nodes(n.Host.StopTokens.Router);
            async Task DialAtOnceAsync(IEnumerable<TestHosts.TestNode> targets)
            {
                // Each a shared dial with a timeout and a handshake (main linked each to the host's stop token twice).
                await Task.WhenAll(targets.Select(o => a.Host.ConnectAsync(o.Address, CancellationToken.None).AsTask()).ToList());
                await Task.Delay(TimeSpan.FromSeconds(10), d.Clock); // identify and the start-up pings are done
            }

            await DialAtOnceAsync(others.Take(10));
            Assert.That(a.Host.Connections, Has.Count.EqualTo(10), "every dial connected");
            var afterTen = Nodes(a);
            var listenersAfterOne = others.Take(10).Sum(Nodes);

            await DialAtOnceAsync(others.Skip(10));
            Assert.That(a.Host.Connections, Has.Count.EqualTo(30), "every dial connected");
            Assert.That(Nodes(a), Is.EqualTo(afterTen),
                "twice as many dials at once left the host's and router's stop tokens no more callback nodes (live or free)");
            Assert.That(afterTen, Is.LessThanOrEqualTo(1), "one standing registration at most, not one per dial");
            Assert.That(others.Skip(10).Sum(Nodes), Is.EqualTo(2 * listenersAfterOne), "each listener as the first ten: nothing per handshake");
        });
    }
}
