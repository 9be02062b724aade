using Google.Protobuf;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using static Potluck.Protocol.Tests.Gossipsub.RouterFixture;
using GPb = Potluck.Protocol.Gossipsub.Pb;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// Routers of one process (a simulated mesh's nodes) keep one array of each message id they cache and deliver, and one of
/// each delivered message's author (<see cref="SharedValues.ShareMessageId"/>, <see cref="SharedValues.Share(PeerId)"/>):
/// equal byte for byte, so every answer is the same; without shared values each keeps its own, as before.
/// </summary>
public class SharedMessageIdTests
{
    private static readonly PrivateKey Author = PrivateKey.FromRandom(new Random(43));

    private static GPb.Message Decoded(GPb.Message m) => GPb.Message.Parser.ParseFrom(m.ToByteArray());

    private static (RouterFixture A, RouterFixture B, GossipMessage AtA, GossipMessage AtB) TwoRoutersReceive(SharedValues? shared, GPb.Message message)
    {
        var a = new RouterFixture(6, shared: shared?.Table(MessageContent.Instance), sharedValues: shared, seed: 1);
        var b = new RouterFixture(6, shared: shared?.Table(MessageContent.Instance), sharedValues: shared, seed: 2);
        a.Router.Subscribe(Topic, a.Now);
        b.Router.Subscribe(Topic, b.Now);
        a.Drain();
        b.Drain();
        a.Receive(0, Decoded(message)); // each node decodes its own copy of the wire bytes
        b.Receive(3, Decoded(message));
        return (a, b, a.Drain().Deliveries.Single(), b.Drain().Deliveries.Single());
    }

    [Test]
    public void TwoRouters_KeepOneArrayOfTheId_AndOfTheAuthor_ForWhatTheyCacheAndDeliver()
    {
        var shared = SharedValues.Create();
        var message = Signed(Author, Topic, [4, 5, 6], 9);
        var id = IdOf(message);
        var (a, b, atA, atB) = TwoRoutersReceive(shared, message);

        Assert.That(atA.Id, Is.EqualTo(id));
        Assert.That(atB.Id, Is.EqualTo(id));
        Assert.That(atB.Id.Raw, Is.SameAs(atA.Id.Raw), "one array of the id in the process");
        Assert.That(a.Router.CachedId(id)!.Value.Raw, Is.SameAs(atA.Id.Raw), "the cache keeps that array");
        Assert.That(b.Router.CachedId(id)!.Value.Raw, Is.SameAs(atA.Id.Raw));
        Assert.That(atA.Author, Is.EqualTo(Author.PeerId));
        Assert.That(atB.Author!.Value.SharedArray, Is.SameAs(atA.Author!.Value.SharedArray), "one array of the author");
        Assert.That(shared.MessageIdCount, Is.EqualTo(1));
        Assert.That(a.Router.HasSeen(id) && b.Router.HasSeen(id), Is.True);

        // Everything read from the shared id is what each node's own would give: served on IWANT and advertised on IHAVE.
        b.Receive(1, IWant(id));
        var served = b.Drain().Rpcs.Where(r => r.Peer == b.Id(1)).SelectMany(r => r.Rpc.Publish).Single();
        Assert.That(GossipsubRouter.DefaultMessageId(served), Is.EqualTo(id.ToArray()));
    }

    [Test]
    public void WithoutSharedValues_EachRouterKeepsItsOwnArrays()
    {
        var message = Signed(Author, Topic, [4, 5, 6], 9);
        var id = IdOf(message);
        var (a, b, atA, atB) = TwoRoutersReceive(null, message);

        Assert.That(atB.Id, Is.EqualTo(atA.Id));
        Assert.That(atB.Id.Raw, Is.Not.SameAs(atA.Id.Raw));
        Assert.That(a.Router.CachedId(id)!.Value.Raw, Is.SameAs(atA.Id.Raw));
        Assert.That(b.Router.CachedId(id)!.Value.Raw, Is.SameAs(atB.Id.Raw));
        Assert.That(atB.Author!.Value.SharedArray, Is.Not.SameAs(atA.Author!.Value.SharedArray));
    }

    [Test]
    public void AnOwnMessage_IsCachedUnderTheSharedIdOfTheSameBytes()
    {
        var shared = SharedValues.Create();
        var a = new RouterFixture(6, shared: shared.Table(MessageContent.Instance), sharedValues: shared, seed: 1);
        a.Router.Subscribe(Topic, a.Now);
        a.Drain();
        var (id, _) = a.Router.Publish(Topic, new byte[] { 1 }, a.Now);
        var published = a.Drain().Rpcs.SelectMany(r => r.Rpc.Publish).First();
        Assert.That(IdOf(published), Is.EqualTo(id));
        var b = new RouterFixture(6, shared: shared.Table(MessageContent.Instance), sharedValues: shared, seed: 2);
        b.Router.Subscribe(Topic, b.Now);
        b.Drain();
        b.Receive(0, Decoded(published));
        Assert.That(b.Drain().Deliveries.Single().Id.Raw, Is.SameAs(a.Router.CachedId(id)!.Value.Raw));
        Assert.That(shared.MessageIdCount, Is.EqualTo(1));
    }

    /// <summary>
    /// Sharing is by the id's bytes only, never instead of a check: a second author's message under a forged id of the
    /// first's (other bytes in <c>from</c>: fails its signature) is refused as before, and the shared id stays the first's.
    /// </summary>
    [Test, Category("Adversarial")]
    public void AForgedCopyUnderAnotherAuthorsId_IsRefused_AndTheSharedIdIsUntouched()
    {
        var shared = SharedValues.Create();
        var message = Signed(Author, Topic, [4, 5, 6], 9);
        var id = IdOf(message);
        var (a, _, atA, _) = TwoRoutersReceive(shared, message);
        var before = atA.Id.ToArray();

        var mallory = PrivateKey.FromRandom(new Random(44));
        var forged = Signed(mallory, Topic, [6, 6, 6], 9);
        forged.From = message.From; // the first author's id bytes, Mallory's signature
        var c = new RouterFixture(6, shared: shared.Table(MessageContent.Instance), sharedValues: shared, seed: 3);
        c.Router.Subscribe(Topic, c.Now);
        c.Drain();
        c.Receive(0, forged);
        Assert.That(c.Drain().Deliveries, Is.Empty, "a bad signature is refused");
        Assert.That(c.Router.HasSeen(id), Is.False);
        Assert.That(atA.Id.ToArray(), Is.EqualTo(before));
        Assert.That(a.Router.CachedId(id)!.Value.Raw, Is.SameAs(atA.Id.Raw));
    }
}
