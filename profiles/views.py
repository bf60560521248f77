"""Browser screens of the profiles app: the profile explorer and the identity graph's screens.

Everyone who may browse profiles (data team, compliance, admins) sees profiles, the graph, the
why-view, flagged cases and blocked values, and (consent.view_profile_consent) a profile's
current consent with merge conflicts; changing the graph (un-merge, link or dismiss a flagged
case, edit blocked values) and rectifying personal fields is for the data team and admins.
Viewing personal data is audited.
"""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import IntegrityError, transaction
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from rules.contrib.views import permission_required

from consent.selectors import profile_consent_states
from consent.services import audit_record
from consent.services.inputs import ConsentInputError
from consent.services.requests import RECTIFIABLE_FIELDS
from profiles import selectors
from profiles.identity import selectors as graph
from profiles.identity import traits
from profiles.identity.blocklist import pattern_error
from profiles.identity.flags import FlagError, identity_flag_dismiss, identity_flag_link
from profiles.identity.paths import identity_path
from profiles.identity.rectify import profile_rectify_by_staff
from profiles.identity.resolve import events_unattributed_count, events_unattributed_requeue
from profiles.identity.split import UnmergeError, identity_link_deactivate, unmerge_preview
from profiles.models import BlockedIdentifier, Identity, IdentityFlag, IdentityLink, Profile

PAGE_SIZE = 50
TIMELINE_PAGE_SIZE = 25


def _require(request, permission: str) -> None:
    if not request.user.has_perm(permission):
        raise PermissionDenied


@login_required
@permission_required("profiles.browse", raise_exception=True)
def profile_list(request):
    query = request.GET.get("q", "").strip()
    page = Paginator(selectors.profile_list_queryset(query=query), PAGE_SIZE).get_page(request.GET.get("page"))
    if query:
        audit_record(actor=request.user, action="profile.searched", object_type="profile",
                     details={"results": page.paginator.count})
    return render(request, "profiles/profile_list.html", {"page": page, "query": query,
                                                          "flag_counts": graph.identity_flag_counts()})


def _live_profile_or_redirect(request, profile_id, view_name: str, *args):
    profile = get_object_or_404(Profile.objects.select_related("computed"), id=profile_id)
    if profile.merged_into_id:
        messages.info(request, f"Profile {profile.id} was merged into this one; its old id still leads here.")
        return None, redirect(view_name, profile.merged_into_id, *args)
    return profile, None


@login_required
@permission_required("profiles.browse", raise_exception=True)
def profile_detail(request, profile_id):
    profile, moved = _live_profile_or_redirect(request, profile_id, "profiles:detail")
    if moved:
        return moved
    show = request.GET.get("show", "all")
    show = show if show in graph.ProfileTimeline.SHOW else "all"
    timeline = Paginator(graph.ProfileTimeline(profile_id=profile.id, show=show),
                         TIMELINE_PAGE_SIZE).get_page(request.GET.get("page"))
    audit_record(actor=request.user, action="profile.viewed", object_type="profile", object_id=profile.id,
                 details={"timeline_page": timeline.number, "show": show})
    context = {"profile": profile, "timeline": timeline, "show": show, "computed": getattr(profile, "computed", None),
               "can_change": request.user.has_perm("profiles.change_identity_graph")}
    if request.htmx and request.GET.get("partial") == "timeline":
        return render(request, "profiles/profile_timeline.html", context)
    context.update(graph.profile_graph(profile=profile))
    context["history"] = graph.profile_merge_history(profile=profile)
    if request.user.has_perm("consent.view_profile_consent"):
        context["consent_states"] = profile_consent_states(profile_id=profile.id)
        context["can_view_ledger"] = request.user.has_perm("consent.view_ledger")
    context["can_rectify"] = _may_rectify(request.user)
    return render(request, "profiles/profile_detail.html", context)


def _may_rectify(user) -> bool:
    return user.has_perm("profiles.rectify_profile") and user.has_perm("consent.rectify_profile")


class RectifyForm(forms.Form):
    """The personal fields consent's profile_rectify accepts, limited as the columns are."""

    def __init__(self, *args, profile: Profile, **kwargs):
        super().__init__(*args, **kwargs)
        for name in RECTIFIABLE_FIELDS:
            label = Profile._meta.get_field(name).verbose_name.capitalize()
            if name == "birth_year":
                field = forms.IntegerField(required=False, label=label, min_value=1900,
                                           max_value=timezone.now().year)
            else:
                limit = Profile._meta.get_field(name).max_length or traits.LIMITS.get(name, 200)
                field = forms.CharField(required=False, label=label, max_length=limit)
            field.initial = getattr(profile, name)
            self.fields[name] = field
        self.fields["country"].help_text = "Two-letter ISO code, e.g. DE"

    def changes(self) -> dict:
        return {name: "" if value is None else value for name, value in self.cleaned_data.items()}


@login_required
def profile_rectify(request, profile_id):
    """Correct a profile's personal fields (rectification, audited); form errors stay on the page."""
    if not _may_rectify(request.user):
        raise PermissionDenied
    profile, moved = _live_profile_or_redirect(request, profile_id, "profiles:rectify")
    if moved:
        return moved
    form = RectifyForm(request.POST or None, profile=profile)
    if request.method == "POST" and form.is_valid():
        try:
            changed = profile_rectify_by_staff(profile_id=profile.id, changes=form.changes(), actor=request.user)
        except ConsentInputError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, f"Corrected: {', '.join(changed)}." if changed else "Nothing changed.")
            return redirect("profiles:detail", profile.id)
    else:
        audit_record(actor=request.user, action="profile.viewed", object_type="profile", object_id=profile.id,
                     details={"screen": "rectify"})
    status = 400 if form.is_bound else 200
    return render(request, "profiles/profile_rectify.html", {"profile": profile, "form": form}, status=status)


class UnmergeForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000,
                             help_text="Why these identifiers are not one person. Kept in the audit log.")
    confirm = forms.BooleanField(label="I have checked what will move and want to un-merge",
                                 error_messages={"required": "Tick the box to confirm the un-merge."})

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("Give a reason for the un-merge.")
        return reason


@login_required
@permission_required("profiles.change_identity_graph", raise_exception=True)
def profile_unmerge(request, profile_id, link_id):
    """Preview what deactivating a link moves; POST (reason + confirmation) does it."""
    profile, moved = _live_profile_or_redirect(request, profile_id, "profiles:unmerge", link_id)
    if moved:
        return moved
    link = get_object_or_404(IdentityLink.objects.select_related("identity_a", "identity_b", "source"), id=link_id)
    if link.identity_a.profile_id != profile.id or link.identity_b.profile_id != profile.id:
        raise Http404("This link does not join identifiers of this profile.")
    form = UnmergeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            result = identity_link_deactivate(link_id=link.id, actor=request.user,
                                              reason=form.cleaned_data["reason"])
        except UnmergeError as exc:
            form.add_error(None, exc.message)
        else:
            if result.already_inactive:
                messages.info(request, "That link was already deactivated; nothing changed.")
            elif len(result.profiles) > 1:
                messages.success(request, f"Un-merged: {len(result.profiles) - 1} profile(s) split off, "
                                          f"{result.events_moved} events and {result.transactions_moved} "
                                          f"transactions moved.")
            else:
                messages.success(request, "Link deactivated. The identifiers stay one profile through other links.")
            return redirect("profiles:detail", profile.id)
    _, plan = unmerge_preview(link_id=link.id)
    parts = []
    for part in plan.parts:
        identities = Identity.objects.in_bulk(part.identity_ids)
        parts.append({"part": part, "identities": [graph.identity_label(identities[i]) for i in part.identity_ids],
                      "sample": sorted(part.events or [], key=lambda e: e[1], reverse=True)[:5]})
    audit_record(actor=request.user, action="profile.viewed", object_type="profile", object_id=profile.id,
                 details={"screen": "unmerge", "link_id": link.id})
    return render(request, "profiles/profile_unmerge.html", {
        "profile": profile, "link": link, "label_a": graph.identity_label(link.identity_a),
        "label_b": graph.identity_label(link.identity_b), "plan": plan, "parts": parts, "form": form})


class WhyForm(forms.Form):
    KINDS = [("", "any kind"), *Identity.Kind.choices]
    first = forms.CharField(label="First identifier", max_length=200)
    first_kind = forms.ChoiceField(choices=KINDS, required=False, label="kind")
    second = forms.CharField(label="Second identifier", max_length=200)
    second_kind = forms.ChoiceField(choices=KINDS, required=False, label="kind")

    def _identity(self, field: str) -> Identity | None:
        text, kind = self.cleaned_data.get(field, ""), self.cleaned_data.get(f"{field}_kind", "")
        found = graph.identities_matching(text, kind)
        if not found:
            self.add_error(field, "No profile has this identifier (emails and phones match after normalising).")
        elif len(found) > 1:
            kinds = ", ".join(sorted(i.get_kind_display().lower() for i in found))
            self.add_error(field, f"This value is known as several kinds ({kinds}): choose the kind.")
        else:
            return found[0]
        return None

    def clean(self):
        cleaned = super().clean()
        cleaned["first_identity"] = self._identity("first")
        cleaned["second_identity"] = self._identity("second")
        return cleaned


@login_required
@permission_required("profiles.view_identity_graph", raise_exception=True)
def identity_why(request):
    """"Why are these one person?": the path of links joining two identifiers."""
    first = second = None
    form = WhyForm(request.GET or None)
    if "a" in request.GET and "b" in request.GET:
        form = WhyForm()
        try:
            first = Identity.objects.get(id=int(request.GET["a"]))
            second = Identity.objects.get(id=int(request.GET["b"]))
        except (ValueError, Identity.DoesNotExist):
            raise Http404("No such identifier.") from None
    elif form.is_bound and form.is_valid():
        first, second = form.cleaned_data["first_identity"], form.cleaned_data["second_identity"]
    path = None
    if first and second:
        path = identity_path(start=first, goal=second)
        audit_record(actor=request.user, action="profile.why_viewed", object_type="profile",
                     object_id=first.profile_id, details={"identities": [first.id, second.id],
                                                          "profiles": sorted({str(first.profile_id),
                                                                              str(second.profile_id)})})
    context = {"form": form, "first": first, "second": second, "path": path,
               "first_label": graph.identity_label(first) if first else "",
               "second_label": graph.identity_label(second) if second else ""}
    if path:
        context["steps"] = [(link, graph.identity_label(identity), identity) for link, identity in path.steps]
    return render(request, "profiles/profile_why.html", context)


class FlagDecisionForm(forms.Form):
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000, required=False)


@login_required
@permission_required("profiles.view_identity_graph", raise_exception=True)
def identity_flags(request):
    status = request.GET.get("status", IdentityFlag.Status.OPEN)
    status = status if status in IdentityFlag.Status.values or status == "" else IdentityFlag.Status.OPEN
    kind = request.GET.get("kind", "")
    kind = kind if kind in IdentityFlag.Kind.values else ""
    page = Paginator(graph.identity_flags(status=status, kind=kind), PAGE_SIZE).get_page(request.GET.get("page"))
    graph.identity_flags_label(page.object_list)
    audit_record(actor=request.user, action="identity.flags_viewed", object_type="identity_flag",
                 details={"status": status, "kind": kind, "page": page.number})
    return render(request, "profiles/profile_flags.html", {
        "page": page, "status": status, "kind": kind, "statuses": IdentityFlag.Status.choices,
        "kinds": IdentityFlag.Kind.choices, "can_change": request.user.has_perm("profiles.change_identity_graph")})


@login_required
@require_POST
@permission_required("profiles.change_identity_graph", raise_exception=True)
def identity_flag_decide(request, flag_id, decision):
    flag = get_object_or_404(IdentityFlag, id=flag_id)
    form = FlagDecisionForm(request.POST)
    note = form.cleaned_data["note"] if form.is_valid() else ""
    try:
        if decision == "link":
            result = identity_flag_link(flag_id=flag.id, actor=request.user, note=note)
            messages.success(request, "Linked: the two profiles are now one." if result.absorbed
                             else "Linked (the identifiers were already one profile).")
        else:
            identity_flag_dismiss(flag_id=flag.id, actor=request.user, note=note)
            messages.success(request, "Kept apart; the case is closed.")
    except FlagError as exc:
        messages.error(request, exc.message)
    return redirect(f"{reverse('profiles:flags')}?status={request.POST.get('return_status', 'open')}")


class BlockedIdentifierForm(forms.ModelForm):
    class Meta:
        model = BlockedIdentifier
        fields = ["kind", "match", "value", "note"]
        help_texts = {"value": "Exact values match case-insensitively; a regular expression is searched in the "
                               "normalised identifier (anchor it with ^ and $)."}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [("", "any kind"), *Identity.Kind.choices]

    def clean(self):
        cleaned = super().clean()
        match, value = cleaned.get("match"), (cleaned.get("value") or "").strip()
        if match == BlockedIdentifier.Match.EXACT:
            value = value.lower()
        error = pattern_error(match or "", value)
        if error:
            self.add_error("value", error)
        elif BlockedIdentifier.objects.filter(kind=cleaned.get("kind", ""), match=match, value=value).exists():
            self.add_error("value", "This value is already blocked.")
        cleaned["value"] = value
        return cleaned

    def validate_unique(self):
        pass  # checked in clean() with the normalised value and a readable message


@login_required
@permission_required("profiles.view_identity_graph", raise_exception=True)
def identity_blocked(request):
    form = BlockedIdentifierForm(request.POST or None)
    if request.method == "POST":
        _require(request, "profiles.change_identity_graph")
        if form.is_valid():
            try:
                with transaction.atomic():
                    blocked = form.save(commit=False)
                    blocked.created_by = request.user
                    blocked.save()
            except IntegrityError:
                form.add_error("value", "This value is already blocked.")
            else:
                audit_record(actor=request.user, action="identity.blocked_value_added",
                             object_type="blocked_identifier", object_id=blocked.id,
                             details={"kind": blocked.kind, "match": blocked.match})
                messages.success(request, "Blocked. New messages carrying this value will not link anyone; "
                                          "links made before stay (un-merge them from the profile).")
                return redirect("profiles:blocked")
    page = Paginator(graph.blocked_identifiers(), 100).get_page(request.GET.get("page"))
    return render(request, "profiles/profile_blocked.html", {
        "page": page, "form": form, "can_change": request.user.has_perm("profiles.change_identity_graph"),
        "unattributed": events_unattributed_count()})


@login_required
@require_POST
@permission_required("profiles.change_identity_graph", raise_exception=True)
def identity_unattributed_requeue(request):
    count = events_unattributed_requeue()
    audit_record(actor=request.user, action="identity.unattributed_requeued", object_type="event",
                 details={"events": count})
    messages.success(request, f"{count} unattributed events sent back to resolution." if count
                     else "No unattributed events.")
    return redirect("profiles:blocked")


@login_required
@require_POST
@permission_required("profiles.change_identity_graph", raise_exception=True)
def identity_blocked_toggle(request, blocked_id):
    blocked = get_object_or_404(BlockedIdentifier, id=blocked_id)
    BlockedIdentifier.objects.filter(id=blocked.id).update(is_active=not blocked.is_active)
    audit_record(actor=request.user, action="identity.blocked_value_toggled", object_type="blocked_identifier",
                 object_id=blocked.id, details={"is_active": not blocked.is_active})
    messages.success(request, f"{'Unblocked' if blocked.is_active else 'Blocked again'}: “{blocked.value}”.")
    return redirect("profiles:blocked")
