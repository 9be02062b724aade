using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;
using static Potluck.Protocol.Tests.Gossipsub.RouterFixture;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// A message with an audience (a protocol id: what a batch chain pair needs, which older nodes reject) is published,
/// forwarded, advertised in IHAVE and served on IWANT only to peers that speak it (<see cref="GossipsubRouter.Speaks"/>),
/// so a peer of an older build is never handed a message it would score its sender down for; other messages go as before.
/// </summary>
public class GossipAudienceTests
{
    private const string Audience = "/potluck/chain/1.2.0";
    private static readonly byte[] Payload = [1, 2, 3];

    /// <summary>Twenty subscribed peers, the even ones speaking <see cref="Audience"/>.</summary>
    private static (RouterFixture Fixture, HashSet<PeerId> Speakers) Mixed()
    {
        var f = new RouterFixture(20);
        var speakers = Enumerable.Range(0, 20).Where(i => i % 2 == 0).Select(f.Id).ToHashSet();
        f.Router.Speaks = (peer, protocol) => protocol == Audience && speakers.Contains(peer);
        f.Router.Subscribe(Topic, f.Now);
        f.Drain();
        return (f, speakers);
    }

    private static HashSet<PeerId> SentMessage(RouterOutput output) => [.. PeersWith(output, r => r.Publish.Count > 0)];

    private static HashSet<PeerId> Advertised(RouterOutput output, MessageId id) =>
        [.. PeersWith(output, r => r.Control?.Ihave.Any(h => h.MessageIDs.Any(b => b.Span.SequenceEqual(id.Span))) == true)];

    [Test]
    public void Publish_WithAudience_ReachesOnlyPeersThatSpeakIt_WhileAMessageWithoutGoesToAll()
    {
        var (f, speakers) = Mixed();

        var (_, restrictedPeers) = f.Router.Publish(Topic, Payload, f.Now, Audience);
        var restricted = SentMessage(f.Drain());
        var (_, openPeers) = f.Router.Publish(Topic, Payload, f.Now);
        var open = SentMessage(f.Drain());

        Assert.That(restricted.SetEquals(speakers), Is.True, "flood publish: every speaker, and no other peer");
        Assert.That(restrictedPeers, Is.EqualTo(10));
        Assert.That(open, Has.Count.EqualTo(20), "a message without an audience goes to every subscriber");
        Assert.That(openPeers, Is.EqualTo(20));
        Assert.That(f.Router.Counters.Withheld, Is.EqualTo(10));
    }

    [Test]
    public void RestrictedMessage_IsAdvertisedAndServedOnlyToSpeakers_ANonSpeakersIWantGetsNothing()
    {
        var (f, speakers) = Mixed();
        var (restrictedId, _) = f.Router.Publish(Topic, Payload, f.Now, Audience);
        var (openId, _) = f.Router.Publish(Topic, Payload, f.Now);
        f.Drain();

        var advertisedRestricted = new HashSet<PeerId>();
        var advertisedOpen = new HashSet<PeerId>();
        for (var i = 0; i < 3; i++)
        {
            f.Heartbeat();
            var output = f.Drain();
            advertisedRestricted.UnionWith(Advertised(output, restrictedId));
            advertisedOpen.UnionWith(Advertised(output, openId));
        }
        Assert.That(advertisedRestricted, Is.Not.Empty, "speakers outside the mesh are told of it");
        Assert.That(advertisedRestricted.IsSubsetOf(speakers), Is.True, "no other peer is told of it");
        Assert.That(advertisedOpen.Except(speakers), Is.Not.Empty, "a message without an audience is advertised to any peer");

        var nonSpeaker = Enumerable.Range(0, 20).First(i => !speakers.Contains(f.Id(i)));
        var speaker = Enumerable.Range(0, 20).First(i => speakers.Contains(f.Id(i)));
        f.Receive(nonSpeaker, IWant(restrictedId, openId));
        f.Receive(speaker, IWant(restrictedId));
        var served = ByPeer(f.Drain());

        Assert.That(served[f.Id(nonSpeaker)].Publish.Select(m => IdOf(m)), Is.EqualTo(new[] { openId }), "the non-speaker is served the open message only");
        Assert.That(served[f.Id(speaker)].Publish.Select(m => IdOf(m)), Is.EqualTo(new[] { restrictedId }));
    }

    [Test]
    public void Forward_OfAMessageItsValidatorRestricts_GoesOnlyToMeshPeersThatSpeakIt()
    {
        var (f, speakers) = Mixed();
        f.Router.SetValidator(Topic, m =>
        {
            m.Audience = m.Data.Span[0] == 9 ? Audience : null;
            return ValidationResult.Accept;
        });
        var author = PrivateKey.FromRandom(new Random(5));
        var mesh = f.Router.MeshPeers(Topic).ToHashSet();
        var from = Enumerable.Range(0, 20).First(i => mesh.Contains(f.Id(i)));
        Assert.That(mesh.Count(p => speakers.Contains(p) && p != f.Id(from)), Is.GreaterThan(0), "seed check: a speaking mesh peer to forward to");
        Assert.That(mesh.Count(p => !speakers.Contains(p) && p != f.Id(from)), Is.GreaterThan(0), "seed check: a mesh peer that does not speak it");

        f.Receive(from, Signed(author, Topic, [9, 1], 1));
        var restricted = SentMessage(f.Drain());
        f.Receive(from, Signed(author, Topic, [1, 1], 2));
        var open = SentMessage(f.Drain());

        var expected = mesh.Where(p => p != f.Id(from)).ToHashSet();
        Assert.That(open.SetEquals(expected), Is.True, "an unrestricted message goes to the whole mesh");
        Assert.That(restricted.SetEquals(expected.Where(speakers.Contains)), Is.True, "a restricted one to its speaking mesh peers only");
    }

    [Test]
    public void RouterThatCannotTellWhoSpeaks_SendsARestrictedMessageToNoPeer()
    {
        var f = new RouterFixture(8);
        f.Router.Subscribe(Topic, f.Now);
        f.Drain();

        var (_, peers) = f.Router.Publish(Topic, Payload, f.Now, Audience);

        Assert.That(peers, Is.Zero);
        Assert.That(SentMessage(f.Drain()), Is.Empty);
    }
}
