using Google.Protobuf;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using static Potluck.Protocol.Tests.Gossipsub.RouterFixture;
using GPb = Potluck.Protocol.Gossipsub.Pb;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// Routers of one process (a simulated mesh's nodes) keep one instance of each message they cache and forward
/// (<see cref="MessageContent"/> through <see cref="SharedValues"/>), found by every field's bytes, never by the id.
/// </summary>
public class SharedMessageTests
{
    private static readonly PrivateKey Author = PrivateKey.FromRandom(new Random(42));

    private static GPb.Message Decoded(GPb.Message m) => GPb.Message.Parser.ParseFrom(m.ToByteArray()); // a node's own decode of the wire bytes

    private static GPb.Message? Served(RouterFixture f, int peer, MessageId id)
    {
        f.Drain();
        f.Receive(peer, IWant(id));
        return f.Drain().Rpcs.Where(r => r.Peer == f.Id(peer)).SelectMany(r => r.Rpc.Publish).SingleOrDefault();
    }

    [Test]
    public void TwoRouters_EachDecodingItsOwnCopy_CacheAndForwardOneInstance()
    {
        var table = SharedValues.Create().Table(MessageContent.Instance);
        var a = new RouterFixture(6, shared: table, seed: 1);
        var b = new RouterFixture(6, shared: table, seed: 2);
        a.Router.Subscribe(Topic, a.Now);
        b.Router.Subscribe(Topic, b.Now);
        a.Drain();
        b.Drain();
        var message = Signed(Author, Topic, [1, 2, 3], 7);
        var id = IdOf(message);
        var copyA = Decoded(message);
        var copyB = Decoded(message);

        a.Receive(0, copyA);
        b.Receive(0, copyB);

        Assert.That(a.Router.Cached(id), Is.SameAs(copyA), "the first router keeps the copy it validated");
        Assert.That(b.Router.Cached(id), Is.SameAs(copyA), "the second keeps that one instance, not its own decode");
        var forwarded = b.Drain().Rpcs.SelectMany(r => r.Rpc.Publish).ToList();
        Assert.That(forwarded, Is.Not.Empty);
        Assert.That(forwarded, Has.All.SameAs(copyA));
        Assert.That(Served(b, 1, id), Is.SameAs(copyA));
    }

    [Test]
    public void WithoutATable_EachRouterKeepsItsOwnDecode()
    {
        var a = new RouterFixture(6, seed: 1);
        var b = new RouterFixture(6, seed: 2);
        a.Router.Subscribe(Topic, a.Now);
        b.Router.Subscribe(Topic, b.Now);
        var message = Signed(Author, Topic, [1, 2, 3], 7);
        var copyA = Decoded(message);
        var copyB = Decoded(message);

        a.Receive(0, copyA);
        b.Receive(0, copyB);

        Assert.That(a.Router.Cached(IdOf(message)), Is.SameAs(copyA));
        Assert.That(b.Router.Cached(IdOf(message)), Is.SameAs(copyB));
    }

    [Test]
    [Category("Adversarial")]
    public void AnAuthorSigningTwoMessagesUnderOneId_EachNodeServesTheOneItValidated()
    {
        // One id (author, seqno), two validly signed contents: node A validates the first, node B the second; a peer then
        // re-sends A the second under the cached id. Sharing is by content, so neither node holds or serves the other's.
        var table = SharedValues.Create().Table(MessageContent.Instance);
        var a = new RouterFixture(6, shared: table, seed: 1);
        var b = new RouterFixture(6, shared: table, seed: 2);
        var c = new RouterFixture(6, shared: table, seed: 3);
        foreach (var f in new[] { a, b, c })
        {
            f.Router.Subscribe(Topic, f.Now);
            f.Drain();
        }
        var first = Signed(Author, Topic, [1, 1, 1], 9);
        var second = Signed(Author, Topic, [2, 2, 2], 9);
        var id = IdOf(first);
        Assert.That(IdOf(second), Is.EqualTo(id));

        a.Receive(0, Decoded(first));
        b.Receive(0, Decoded(second));
        a.Receive(1, Decoded(second)); // a duplicate by id: dropped
        c.Receive(0, Decoded(first));

        Assert.That(a.Router.Cached(id)!.Data.ToByteArray(), Is.EqualTo(new byte[] { 1, 1, 1 }));
        Assert.That(b.Router.Cached(id)!.Data.ToByteArray(), Is.EqualTo(new byte[] { 2, 2, 2 }));
        Assert.That(c.Router.Cached(id), Is.SameAs(a.Router.Cached(id)), "the same bytes: one instance");
        Assert.That(Served(a, 2, id), Is.EqualTo(first));
        Assert.That(Served(b, 2, id), Is.EqualTo(second));
        Assert.That(Served(a, 3, id)!.ToByteArray(), Is.EqualTo(first.ToByteArray()), "byte for byte what A validated");
    }

    [Test]
    public void Content_IsEveryFieldAndItsPresence_AndUnknownFieldsAreNeverShared()
    {
        var message = Signed(Author, Topic, [5], 1);
        Assert.That(MessageContent.Instance.Equals(Decoded(message), Decoded(message)), Is.True);
        Assert.That(MessageContent.Instance.GetHashCode(Decoded(message)), Is.EqualTo(MessageContent.Instance.GetHashCode(message)));

        // Absent and present-but-empty encode differently; protobuf's own Equals calls them equal.
        var absent = new GPb.Message { Topic = Topic };
        var empty = new GPb.Message { Topic = Topic, Data = ByteString.Empty };
        Assert.That(absent.Equals(empty), Is.True);
        Assert.That(absent.ToByteArray(), Is.Not.EqualTo(empty.ToByteArray()));
        Assert.That(MessageContent.Instance.Equals(absent, empty), Is.False);

        foreach (var other in new[] { Signed(Author, Topic, [6], 1), Signed(Author, Topic, [5], 2), Signed(Author, "u", [5], 1) })
        {
            Assert.That(MessageContent.Instance.Equals(message, other), Is.False);
        }

        // A field this schema does not know (number 15, bytes): kept and re-encoded as it came, so never shared.
        var withUnknown = message.ToByteArray().Concat(new byte[] { 0x7A, 0x01, 0x09 }).ToArray();
        var x = GPb.Message.Parser.ParseFrom(withUnknown);
        var y = GPb.Message.Parser.ParseFrom(withUnknown);
        Assert.That(x.HasUnknownFields, Is.True);
        Assert.That(MessageContent.Shareable(x), Is.False);
        Assert.That(MessageContent.Instance.Equals(x, y), Is.False);
        Assert.That(MessageContent.Shareable(message), Is.True);
    }
}
