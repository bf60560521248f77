"""Forms of the compliance screens."""

from django import forms

from consent import reference
from consent.models import (
    SUBJECT_KINDS,
    CmpCategoryMapping,
    ConsentRecord,
    DataSubjectRequest,
    NoticeVersion,
    Purpose,
)
from consent.services.requests import RECTIFIABLE_FIELDS

KIND_CHOICES = [("", "any identifier")] + SUBJECT_KINDS


class _Labels:
    """Labels without Django's trailing colon (the screens put labels above their fields)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)


class LedgerFilterForm(_Labels, forms.Form):
    q = forms.CharField(required=False, label="Person", max_length=200,
                        widget=forms.TextInput(attrs={"placeholder": "Email, phone, user id, anonymous id, CRM id "
                                                                     "or profile id", "type": "search"}))
    kind = forms.ChoiceField(required=False, choices=KIND_CHOICES, label="Identifier kind")
    purpose = forms.ChoiceField(required=False, label="Purpose")
    granted = forms.ChoiceField(required=False, choices=[("", "granted or withdrawn"), ("yes", "granted"),
                                                         ("no", "withdrawn")], label="Decision")
    source = forms.ChoiceField(required=False, choices=[("", "any source")] + ConsentRecord.Source.choices)
    date_from = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["purpose"].choices = [("", "any purpose")] + [(key, info.name) for key, info in
                                                                  reference.purposes().items()]

    def filters(self) -> dict:
        data = self.cleaned_data if self.is_valid() else {}
        return {"query": data.get("q", ""), "kind": data.get("kind", ""), "purpose": data.get("purpose", ""),
                "granted": data.get("granted", ""), "source": data.get("source", ""),
                "date_from": data["date_from"].isoformat() if data.get("date_from") else "",
                "date_to": data["date_to"].isoformat() if data.get("date_to") else ""}


class AuditFilterForm(_Labels, forms.Form):
    actor = forms.CharField(required=False, max_length=150, label="Staff user")
    action = forms.CharField(required=False, max_length=60, label="Action",
                             widget=forms.TextInput(attrs={"placeholder": "e.g. profile.viewed or dsr."}))
    object_type = forms.CharField(required=False, max_length=40, label="Object type")
    object_id = forms.CharField(required=False, max_length=100, label="Object id")
    date_from = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def filters(self) -> dict:
        data = self.cleaned_data if self.is_valid() else {}
        return {"actor": data.get("actor", ""), "action": data.get("action", ""),
                "object_type": data.get("object_type", ""), "object_id": data.get("object_id", ""),
                "date_from": data["date_from"].isoformat() if data.get("date_from") else "",
                "date_to": data["date_to"].isoformat() if data.get("date_to") else ""}


class RequestCreateForm(_Labels, forms.Form):
    type = forms.ChoiceField(choices=DataSubjectRequest.Type.choices, label="Request")
    identifier_kind = forms.ChoiceField(choices=SUBJECT_KINDS, initial="email", label="Identified by")
    identifier = forms.CharField(max_length=200, label="Identifier")
    note = forms.CharField(required=False, max_length=2000, label="Note (optional)",
                           widget=forms.Textarea(attrs={"rows": 2}))


class RejectForm(_Labels, forms.Form):
    reason = forms.CharField(max_length=300, label="Reason", widget=forms.TextInput())


class ConfirmForm(_Labels, forms.Form):
    confirm = forms.CharField(max_length=20, label="Type the request reference to confirm")

    def __init__(self, *args, reference: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.reference = reference
        self.fields["confirm"].label = f"Type {reference} to confirm"

    def clean_confirm(self):
        if self.cleaned_data["confirm"].strip().upper() != self.reference:
            raise forms.ValidationError(f"Type {self.reference} to confirm; this cannot be undone.")
        return self.cleaned_data["confirm"]


class RectifyForm(_Labels, forms.Form):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in RECTIFIABLE_FIELDS:
            self.fields[name] = forms.CharField(required=False, max_length=120,
                                                label=name.replace("_", " ").capitalize())


DECISION_CHOICES = [("", "leave as is"), ("grant", "grant"), ("withdraw", "withdraw")]


class PersonConsentForm(_Labels, forms.Form):
    """Staff record a person's decision (e.g. given by phone or letter)."""

    notice = forms.ModelChoiceField(queryset=NoticeVersion.objects.all(), required=False,
                                    label="Notice the person was shown", empty_label="none")
    note = forms.CharField(required=False, max_length=200, label="How was it given? (no personal data)")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for key, info in reference.purposes().items():
            if info.is_active:
                self.fields[f"purpose_{key}"] = forms.ChoiceField(choices=DECISION_CHOICES, required=False,
                                                                  label=info.name)

    def decisions(self) -> dict[str, bool]:
        return {name.removeprefix("purpose_"): value == "grant" for name, value in self.cleaned_data.items()
                if name.startswith("purpose_") and value}

    def clean(self):
        data = super().clean()
        if not any(value for name, value in data.items() if name.startswith("purpose_")):
            raise forms.ValidationError("Choose grant or withdraw for at least one purpose.")
        return data


class MappingForm(_Labels, forms.ModelForm):
    class Meta:
        model = CmpCategoryMapping
        fields = ["cmp", "category", "purpose"]
        labels = {"cmp": "CMP", "category": "Category as the CMP sends it"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["purpose"].queryset = Purpose.objects.filter(is_active=True)

    def clean(self):
        data = super().clean()
        if data.get("cmp") and data.get("category") and data.get("purpose") and CmpCategoryMapping.objects.filter(
                cmp=data["cmp"], category__iexact=data["category"], purpose=data["purpose"]).exists():
            raise forms.ValidationError("This mapping exists already.")
        return data
